/* test_metrics: registration and the Prometheus text format of the registry. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static size_t count_substr(const char *hay, const char *needle)
{
    size_t n = 0;

    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static char *render(struct buf *b)
{
    buf_init(b, 0);
    metrics_render(b);
    ck_assert_ptr_nonnull(b->data);
    return b->data;
}

/*
 * Checks the exposition format: each family has one HELP immediately followed by one TYPE, and
 * every sample line belongs to the family whose TYPE line came last (so a family is contiguous).
 * Returns the number of families.
 */
static int check_exposition(const char *text)
{
    char seen[32][64];
    int nseen = 0;
    char family[64] = "";
    char help_for[64] = "";

    for (const char *line = text; *line;) {
        const char *eol = strchr(line, '\n');
        ck_assert_msg(eol != NULL, "unterminated line: %s", line);
        int len = (int)(eol - line);
        char name[64];
        if (strncmp(line, "# HELP ", 7) == 0) {
            ck_assert_int_eq(sscanf(line + 7, "%63s", help_for), 1);
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            char type[16];
            ck_assert_int_eq(sscanf(line + 7, "%63s %15s", name, type), 2);
            ck_assert_msg(strcmp(name, help_for) == 0, "TYPE %s not right after its HELP", name);
            ck_assert(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0);
            for (int i = 0; i < nseen; i++)
                ck_assert_msg(strcmp(seen[i], name) != 0, "family %s declared twice", name);
            ck_assert_int_lt(nseen, 32);
            snprintf(seen[nseen++], sizeof seen[0], "%s", name);
            snprintf(family, sizeof family, "%s", name);
            help_for[0] = '\0';
        } else {
            size_t n = strcspn(line, "{ ");
            ck_assert_msg(n < sizeof name, "%.*s", len, line);
            memcpy(name, line, n);
            name[n] = '\0';
            ck_assert_msg(strcmp(name, family) == 0, "sample %.*s outside family %s", len, line,
                          family);
        }
        line = eol + 1;
    }
    return nseen;
}

START_TEST(test_metrics_register_idempotent)
{
    static struct metric m = METRIC_COUNTER("ut_requests_total", "Requests.");
    struct buf b;

    metrics_register(&m);
    metrics_register(&m);
    metric_add(&m, 3);
    metric_add(&m, 2);
    char *text = render(&b);
    ck_assert_uint_eq(count_substr(text, "ut_requests_total 5\n"), 1);
    ck_assert_uint_eq(count_substr(text, "# HELP ut_requests_total Requests.\n"), 1);
    ck_assert_uint_eq(count_substr(text, "# TYPE ut_requests_total counter\n"), 1);
    ck_assert_int_eq(check_exposition(text), 1);
    buf_free(&b);
}
END_TEST

START_TEST(test_metrics_gauge_set)
{
    static struct metric g = METRIC_GAUGE("ut_backlog", "Backlog.");
    struct buf b;

    metrics_register(&g);
    metric_set(&g, 17);
    metric_set(&g, -4);
    char *text = render(&b);
    ck_assert_str_eq(text, "# HELP ut_backlog Backlog.\n# TYPE ut_backlog gauge\nut_backlog -4\n");
    buf_free(&b);
}
END_TEST

START_TEST(test_metrics_families_contiguous)
{
    /* Registered interleaved: two families, three samples of the first one. */
    static struct metric a1 = {"ut_events_total", "Events.", "counter", "topic=\"a\"", 0, NULL};
    static struct metric other = METRIC_GAUGE("ut_other", "Other.");
    static struct metric a2 = {"ut_events_total", "Events.", "counter", "topic=\"b\"", 0, NULL};
    static struct metric third = METRIC_COUNTER("ut_third_total", "Third.");
    static struct metric a3 = {"ut_events_total", "Events.", "counter", "topic=\"c\"", 0, NULL};
    struct buf b;

    metrics_register(&a1);
    metrics_register(&other);
    metrics_register(&a2);
    metrics_register(&third);
    metrics_register(&a3);
    metric_add(&a1, 1);
    metric_add(&a2, 2);
    metric_add(&a3, 3);
    metric_set(&other, 9);
    char *text = render(&b);
    ck_assert_int_eq(check_exposition(text), 3);
    ck_assert_uint_eq(count_substr(text, "# HELP ut_events_total"), 1);
    ck_assert_uint_eq(count_substr(text, "# TYPE ut_events_total"), 1);
    ck_assert_ptr_nonnull(strstr(text, "ut_events_total{topic=\"a\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(text, "ut_events_total{topic=\"b\"} 2\n"));
    ck_assert_ptr_nonnull(strstr(text, "ut_events_total{topic=\"c\"} 3\n"));
    ck_assert_ptr_nonnull(strstr(text, "ut_other 9\n"));
    ck_assert_ptr_nonnull(strstr(text, "ut_third_total 0\n"));
    ck_assert_uint_eq(count_substr(text, "\n"), 3 * 2 + 5);
    buf_free(&b);
}
END_TEST

START_TEST(test_metrics_render_appends)
{
    static struct metric m = METRIC_COUNTER("ut_x_total", "X.");
    struct buf b;

    metrics_register(&m);
    buf_init(&b, 0);
    buf_printf(&b, "# before\n");
    metrics_render(&b);
    ck_assert(strncmp(b.data, "# before\n# HELP ut_x_total X.\n", 30) == 0);
    buf_free(&b);
}
END_TEST

START_TEST(test_metrics_render_empty)
{
    struct buf b;

    buf_init(&b, 0);
    metrics_render(&b);
    ck_assert_uint_eq(b.len, 0);
    buf_free(&b);
}
END_TEST

static Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("core");

    /* The registry is process-wide: each test relies on running in its own process. */
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_metrics_register_idempotent);
    tcase_add_test(tc, test_metrics_gauge_set);
    tcase_add_test(tc, test_metrics_families_contiguous);
    tcase_add_test(tc, test_metrics_render_appends);
    tcase_add_test(tc, test_metrics_render_empty);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(metrics_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
