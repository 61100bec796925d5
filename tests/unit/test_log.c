/* test_log: level parsing, and the exact shape of the JSON line written to stderr. */
#include <check.h>
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* stderr is swapped for a temporary file while a test writes; the test process is forked. */
static int saved_stderr = -1;
static FILE *capture_file;

static void capture_begin(void)
{
    capture_file = tmpfile();
    ck_assert_ptr_nonnull(capture_file);
    saved_stderr = dup(STDERR_FILENO);
    ck_assert_int_ge(saved_stderr, 0);
    ck_assert_int_ge(dup2(fileno(capture_file), STDERR_FILENO), 0);
}

/* Restores stderr (so sanitizer reports stay visible) and returns what was written. */
static char *capture_end(void)
{
    static char text[8192];

    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    rewind(capture_file);
    size_t n = fread(text, 1, sizeof text - 1, capture_file);
    text[n] = '\0';
    fclose(capture_file);
    return text;
}

static size_t count_char(const char *s, char c)
{
    size_t n = 0;

    for (; *s; s++)
        n += *s == c;
    return n;
}

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

/* Parses the single line of text, asserting that it is exactly one JSON object and a newline. */
static json_t *parse_one_line(const char *text)
{
    json_error_t err;
    size_t len = strlen(text);

    ck_assert_uint_gt(len, 1);
    ck_assert_uint_eq(count_char(text, '\n'), 1);
    ck_assert_int_eq(text[len - 1], '\n');
    json_t *line = json_loadb(text, len - 1, JSON_REJECT_DUPLICATES, &err);
    ck_assert_msg(line != NULL, "not JSON: %s (%s)", text, err.text);
    ck_assert(json_is_object(line));
    return line;
}

START_TEST(test_log_level_parse)
{
    static const struct {
        const char *text;
        enum log_level level;
    } good[] = {{"debug", LOG_DEBUG}, {"info", LOG_INFO}, {"warn", LOG_WARN}, {"error", LOG_ERROR}};
    static const char *const bad[] = {"", "INFO", "warning", "inf", "info ", "fatal", "0"};
    enum log_level out;

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        out = (enum log_level)99;
        ck_assert_int_eq(log_level_parse(good[i].text, &out), 0);
        ck_assert_int_eq(out, good[i].level);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        out = LOG_WARN;
        ck_assert_msg(log_level_parse(bad[i], &out) == -1, "accepted \"%s\"", bad[i]);
        ck_assert_int_eq(out, LOG_WARN); /* untouched on failure */
    }
}
END_TEST

START_TEST(test_log_enabled)
{
    log_init("unit", LOG_WARN);
    ck_assert_int_eq(log_enabled(LOG_DEBUG), 0);
    ck_assert_int_eq(log_enabled(LOG_INFO), 0);
    ck_assert_int_ne(log_enabled(LOG_WARN), 0);
    ck_assert_int_ne(log_enabled(LOG_ERROR), 0);
    log_init("unit", LOG_DEBUG);
    ck_assert_int_ne(log_enabled(LOG_DEBUG), 0);
}
END_TEST

START_TEST(test_log_event_line)
{
    log_init("unit-svc", LOG_DEBUG);
    log_set_request_id("req-42");
    capture_begin();
    log_event(LOG_WARN, "thing.happened", "{s:s, s:i, s:b}", "key", "value", "count", 3, "flag", 1);
    char *text = capture_end();

    json_t *line = parse_one_line(text);
    ck_assert(is_rfc3339_ms(json_string_value(json_object_get(line, "ts"))));
    ck_assert_str_eq(json_string_value(json_object_get(line, "level")), "warn");
    ck_assert_str_eq(json_string_value(json_object_get(line, "service")), "unit-svc");
    ck_assert_str_eq(json_string_value(json_object_get(line, "event")), "thing.happened");
    ck_assert_str_eq(json_string_value(json_object_get(line, "request_id")), "req-42");
    ck_assert_str_eq(json_string_value(json_object_get(line, "key")), "value");
    ck_assert_int_eq(json_integer_value(json_object_get(line, "count")), 3);
    ck_assert(json_is_true(json_object_get(line, "flag")));
    ck_assert_uint_eq(json_object_size(line), 8);
    json_decref(line);
}
END_TEST

START_TEST(test_log_event_no_fields_no_request_id)
{
    log_init("unit", LOG_INFO);
    log_set_request_id(NULL);
    capture_begin();
    log_event(LOG_ERROR, "bare", NULL);
    char *text = capture_end();

    json_t *line = parse_one_line(text);
    ck_assert_str_eq(json_string_value(json_object_get(line, "level")), "error");
    ck_assert_ptr_null(json_object_get(line, "request_id"));
    ck_assert_uint_eq(json_object_size(line), 4);
    json_decref(line);
}
END_TEST

START_TEST(test_log_event_newline_in_value_stays_one_line)
{
    log_init("unit", LOG_DEBUG);
    capture_begin();
    log_event(LOG_INFO, "multi", "{s:s}", "message", "first\nsecond\r\n\"quoted\"");
    char *text = capture_end();

    json_t *line = parse_one_line(text);
    ck_assert_str_eq(json_string_value(json_object_get(line, "message")),
                     "first\nsecond\r\n\"quoted\"");
    json_decref(line);
}
END_TEST

START_TEST(test_log_event_below_level_not_written)
{
    log_init("unit", LOG_WARN);
    capture_begin();
    log_event(LOG_DEBUG, "hidden.debug", "{s:s}", "k", "v");
    log_event(LOG_INFO, "hidden.info", NULL);
    char *text = capture_end();
    ck_assert_str_eq(text, "");

    capture_begin();
    log_event(LOG_INFO, "hidden.info", NULL);
    log_event(LOG_WARN, "shown.warn", NULL);
    log_event(LOG_ERROR, "shown.error", NULL);
    text = capture_end();
    ck_assert_uint_eq(count_char(text, '\n'), 2);
    ck_assert_ptr_null(strstr(text, "hidden"));
    ck_assert_ptr_nonnull(strstr(text, "\"shown.warn\""));
    ck_assert_ptr_nonnull(strstr(text, "\"shown.error\""));
}
END_TEST

START_TEST(test_log_event_bad_format_still_logs)
{
    log_init("unit", LOG_DEBUG);
    capture_begin();
    /* "s:s" with a NULL string is a packing error; the event itself must not be lost. */
    log_event(LOG_INFO, "bad.fields", "{s:s}", "k", (const char *)NULL);
    char *text = capture_end();

    json_t *line = parse_one_line(text);
    ck_assert_str_eq(json_string_value(json_object_get(line, "event")), "bad.fields");
    ck_assert(json_is_string(json_object_get(line, "log_error")));
    json_decref(line);
}
END_TEST

START_TEST(test_log_event_value_types)
{
    log_init("unit", LOG_DEBUG);
    capture_begin();
    log_event(LOG_INFO, "types", "{s:s, s:s?, s:i, s:I, s:b, s:b}", "str", "v", "absent",
              (const char *)NULL, "int", -42, "big", (json_int_t)(-9223372036854775807LL - 1),
              "yes", 1, "no", 0);
    char *text = capture_end();

    json_t *line = parse_one_line(text);
    ck_assert_str_eq(json_string_value(json_object_get(line, "str")), "v");
    ck_assert(json_is_null(json_object_get(line, "absent")));
    ck_assert_int_eq(json_integer_value(json_object_get(line, "int")), -42);
    ck_assert(json_integer_value(json_object_get(line, "big")) == -9223372036854775807LL - 1);
    ck_assert(json_is_true(json_object_get(line, "yes")));
    ck_assert(json_is_false(json_object_get(line, "no")));
    ck_assert_uint_eq(json_object_size(line), 10); /* ts, level, service, event + 6 */
    json_decref(line);
}
END_TEST

START_TEST(test_log_event_bytes_stay_valid_json)
{
    log_init("unit", LOG_DEBUG);
    capture_begin();
    /* a bad byte, valid é and 😀, an encoded surrogate, a control character, a backslash */
    log_event(LOG_INFO, "bytes", "{s:s}", "path",
              "a\xff b\xc3\xa9 \xf0\x9f\x98\x80 \xed\xa0\x80 \x01\\");
    char *text = capture_end();

    json_t *line = parse_one_line(text);
    ck_assert_str_eq(json_string_value(json_object_get(line, "path")),
                     "a\xef\xbf\xbd b\xc3\xa9 \xf0\x9f\x98\x80 "
                     "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd \x01\\");
    json_decref(line);
}
END_TEST

START_TEST(test_log_event_other_formats_through_jansson)
{
    log_init("unit", LOG_DEBUG);
    capture_begin();
    log_event(LOG_INFO, "packed", "{s:f, s:o, s:s}", "ratio", 0.5, "list", json_pack("[i,i]", 1, 2),
              "name", "n");
    char *text = capture_end();

    json_t *line = parse_one_line(text);
    ck_assert(json_real_value(json_object_get(line, "ratio")) == 0.5);
    ck_assert_uint_eq(json_array_size(json_object_get(line, "list")), 2);
    ck_assert_str_eq(json_string_value(json_object_get(line, "name")), "n");
    json_decref(line);
}
END_TEST

static void *other_thread(void *arg)
{
    (void)arg;
    return (void *)log_request_id(); /* NULL: the id is per thread */
}

START_TEST(test_log_request_id_per_thread)
{
    pthread_t t;
    void *seen = (void *)1;
    char id[100];

    ck_assert_ptr_null(log_request_id());
    snprintf(id, sizeof id, "abc");
    log_set_request_id(id);
    id[0] = 'X'; /* copied, not borrowed */
    ck_assert_str_eq(log_request_id(), "abc");
    ck_assert_int_eq(pthread_create(&t, NULL, other_thread, NULL), 0);
    ck_assert_int_eq(pthread_join(t, &seen), 0);
    ck_assert_ptr_null(seen);
    log_set_request_id(NULL);
    ck_assert_ptr_null(log_request_id());
}
END_TEST

static Suite *log_suite(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_log_level_parse);
    tcase_add_test(tc, test_log_enabled);
    tcase_add_test(tc, test_log_event_line);
    tcase_add_test(tc, test_log_event_no_fields_no_request_id);
    tcase_add_test(tc, test_log_event_newline_in_value_stays_one_line);
    tcase_add_test(tc, test_log_event_below_level_not_written);
    tcase_add_test(tc, test_log_event_bad_format_still_logs);
    tcase_add_test(tc, test_log_request_id_per_thread);
    tcase_add_test(tc, test_log_event_value_types);
    tcase_add_test(tc, test_log_event_bytes_stay_valid_json);
    tcase_add_test(tc, test_log_event_other_formats_through_jansson);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(log_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
