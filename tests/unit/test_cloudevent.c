/* test_cloudevent: the CloudEvents 1.0 envelope we publish, and its strict parser. */
#include <check.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "cloudevent.h"

/* "2026-11-26T14:00:00.000Z" */
static int is_rfc3339_ms(const char *s)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";

    if (!s || strlen(s) != sizeof shape - 1)
        return 0;
    for (size_t i = 0; shape[i]; i++) {
        if (shape[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != shape[i])
            return 0;
    }
    return 1;
}

static const char *get_str(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key)); /* borrowed */
}

START_TEST(test_cloudevent_new_envelope)
{
    char id[UUID_STR_LEN] = "";
    json_t *data = json_pack("{s:s, s:i}", "dossier_id", "d-1", "amount", 1200);
    json_t *ev =
        cloudevent_new("/ptce/submission", "fr.ptce.dossier.submitted", "d-1", data, "req-7", id);

    ck_assert_ptr_nonnull(ev);
    ck_assert_str_eq(get_str(ev, "specversion"), "1.0");
    ck_assert_int_eq(uuid_is_valid(get_str(ev, "id")), 1);
    ck_assert_str_eq(get_str(ev, "id"), id);
    ck_assert_str_eq(get_str(ev, "source"), "/ptce/submission");
    ck_assert_str_eq(get_str(ev, "type"), "fr.ptce.dossier.submitted");
    ck_assert_str_eq(get_str(ev, "subject"), "d-1");
    ck_assert_str_eq(get_str(ev, "datacontenttype"), "application/json");
    ck_assert_str_eq(get_str(ev, "requestid"), "req-7");
    ck_assert_msg(is_rfc3339_ms(get_str(ev, "time")), "time %s", get_str(ev, "time"));
    ck_assert_ptr_eq(json_object_get(ev, "data"), data); /* the reference was taken */
    ck_assert_int_eq(json_integer_value(json_object_get(data, "amount")), 1200);
    ck_assert_uint_eq(json_object_size(ev), 9);
    json_decref(ev);
}
END_TEST

START_TEST(test_cloudevent_new_optional_parts)
{
    json_t *a = cloudevent_new("s", "t", "x", NULL, NULL, NULL);
    json_t *b = cloudevent_new("s", "t", "x", NULL, NULL, NULL);

    ck_assert_ptr_null(json_object_get(a, "requestid"));
    ck_assert(json_is_object(json_object_get(a, "data"))); /* NULL data becomes {} */
    ck_assert_uint_eq(json_object_size(json_object_get(a, "data")), 0);
    ck_assert_str_ne(get_str(a, "id"), get_str(b, "id"));
    json_decref(a);
    json_decref(b);
}
END_TEST

START_TEST(test_cloudevent_parse_round_trip)
{
    char id[UUID_STR_LEN], why[256] = "";
    struct cloudevent ev;
    json_t *out = cloudevent_new("/ptce/funding", "fr.ptce.payment.made", "p-9",
                                 json_pack("{s:[i,i]}", "parts", 1, 2), "rid", id);
    char *text = json_dumps(out, JSON_COMPACT);

    json_decref(out);
    ck_assert_int_eq(cloudevent_parse(text, strlen(text), &ev, why, sizeof why), STATUS_OK);
    free(text);
    ck_assert_str_eq(ev.id, id);
    ck_assert_str_eq(ev.source, "/ptce/funding");
    ck_assert_str_eq(ev.type, "fr.ptce.payment.made");
    ck_assert_str_eq(ev.subject, "p-9");
    ck_assert_str_eq(ev.request_id, "rid");
    ck_assert(is_rfc3339_ms(ev.time));
    ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(ev.data, "parts"), 1)), 2);
    cloudevent_clear(&ev);
    ck_assert_ptr_null(ev.root);
    ck_assert_ptr_null(ev.id);
}
END_TEST

START_TEST(test_cloudevent_parse_minimal)
{
    static const char text[] =
        "{\"specversion\":\"1.0\",\"id\":\"e1\",\"source\":\"s\",\"type\":\"t\"}";
    struct cloudevent ev;
    char why[256];

    ck_assert_int_eq(cloudevent_parse(text, strlen(text), &ev, why, sizeof why), STATUS_OK);
    ck_assert_str_eq(ev.id, "e1");
    ck_assert_ptr_null(ev.subject);
    ck_assert_ptr_null(ev.request_id);
    ck_assert_ptr_null(ev.data);
    cloudevent_clear(&ev);
}
END_TEST

/* Loop test over envelopes that must be refused. */
static const struct {
    const char *text;
    const char *why; /* a fragment of the explanation */
} rejected[] = {
    {"", "not a JSON object"},
    {"[1,2]", "not a JSON object"},
    {"\"text\"", "not a JSON object"},
    {"{\"specversion\":\"1.0\",", "not a JSON object"},
    {"{\"specversion\":\"1.0\",\"source\":\"s\",\"type\":\"t\"}", "CloudEvents 1.0"},
    {"{\"specversion\":\"1.0\",\"id\":\"\",\"source\":\"s\",\"type\":\"t\"}", "CloudEvents 1.0"},
    {"{\"specversion\":\"1.0\",\"id\":7,\"source\":\"s\",\"type\":\"t\"}", "CloudEvents 1.0"},
    {"{\"specversion\":\"0.3\",\"id\":\"e\",\"source\":\"s\",\"type\":\"t\"}", "CloudEvents 1.0"},
    {"{\"id\":\"e\",\"source\":\"s\",\"type\":\"t\"}", "CloudEvents 1.0"},
    {"{\"specversion\":\"1.0\",\"id\":\"e\",\"type\":\"t\"}", "CloudEvents 1.0"},
    {"{\"specversion\":\"1.0\",\"id\":\"e\",\"source\":\"s\"}", "CloudEvents 1.0"},
    {"{\"specversion\":\"1.0\",\"id\":\"e\",\"id\":\"f\",\"source\":\"s\",\"type\":\"t\"}",
     "not a JSON object"},
};

START_TEST(test_cloudevent_parse_rejects)
{
    struct cloudevent ev;
    char why[256] = "";
    const char *text = rejected[_i].text;

    ck_assert_int_eq(cloudevent_parse(text, strlen(text), &ev, why, sizeof why), STATUS_INVALID);
    ck_assert_msg(strstr(why, rejected[_i].why) != NULL, "%s: why = %s", text, why);
    ck_assert_ptr_null(ev.root); /* nothing to clear, nothing leaked */
    ck_assert_ptr_null(ev.id);
}
END_TEST

START_TEST(test_cloudevent_parse_respects_length)
{
    /* Only the first len bytes count: a valid prefix followed by garbage is accepted. */
    static const char text[] =
        "{\"specversion\":\"1.0\",\"id\":\"e\",\"source\":\"s\",\"type\":\"t\"}GARBAGE";
    struct cloudevent ev;
    char why[256];

    ck_assert_int_eq(cloudevent_parse(text, strlen(text) - 7, &ev, why, sizeof why), STATUS_OK);
    cloudevent_clear(&ev);
    ck_assert_int_eq(cloudevent_parse(text, strlen(text), &ev, why, sizeof why), STATUS_INVALID);
}
END_TEST

START_TEST(test_time_now_rfc3339)
{
    char now[40];

    time_now_rfc3339(now, sizeof now);
    ck_assert_msg(is_rfc3339_ms(now), "%s", now);
    ck_assert(strncmp(now, "20", 2) == 0);
}
END_TEST

static Suite *cloudevent_suite(void)
{
    Suite *s = suite_create("cloudevent");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_cloudevent_new_envelope);
    tcase_add_test(tc, test_cloudevent_new_optional_parts);
    tcase_add_test(tc, test_cloudevent_parse_round_trip);
    tcase_add_test(tc, test_cloudevent_parse_minimal);
    tcase_add_loop_test(tc, test_cloudevent_parse_rejects, 0,
                        (int)(sizeof rejected / sizeof rejected[0]));
    tcase_add_test(tc, test_cloudevent_parse_respects_length);
    tcase_add_test(tc, test_time_now_rfc3339);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(cloudevent_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
