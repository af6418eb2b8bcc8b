/* fuzz_cli: what computectl reads from outside: a --network value
 * (ctl_network_spec_parse) and the agent's answers it renders (an Instance
 * for `show`, a NetworkList for `networks`, an error answer): never a
 * crash or leak (also an `events` line, 'v'); a parsed --network is an object naming its network with
 * only mac/ip/mtu besides; a rendering has no control character but '\n'.
 *
 * Input: one selector byte ('n' --network value, 's' show, 'w' networks,
 * 'o' an Operation for `operation` (a resize's "result" too) and, as
 * {"instance","operation"}, an accepted answer, 'e' an error answer, 'v' an event for `events`, 'p' a download's "progress" object, shown as the
 * terminal bar and as the plain line), then the bytes (a string, or a JSON
 * document). */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Renderings go to a terminal: nothing but printable text and newlines. */
static void check_text(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p < 0x20 && *p != '\n') || *p == 0x7f)
            abort();
}

static void network_spec(const uint8_t *data, size_t size)
{
    char *s = strndup((const char *)data, size);
    struct ctl_error e = {0};
    json_t *o = NULL;
    const char *key;
    json_t *v;

    if (!s)
        abort();
    if (ctl_network_spec_parse(s, &o, &e) == 0) {
        if (!json_is_string(json_object_get(o, "network")))
            abort();
        json_object_foreach(o, key, v)
            if (strcmp(key, "network") && strcmp(key, "mac") && strcmp(key, "ip") && strcmp(key, "mtu"))
                abort();
        json_decref(o);
    } else if (o || !strstr(e.message, "--network")) {
        abort(); /* a refusal names the flag and hands out nothing */
    }
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *doc;
    char *text = NULL;
    int r;

    if (size < 1)
        return 0;
    if (data[0] == 'n') {
        network_spec(data + 1, size - 1);
        return 0;
    }
    doc = json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY, NULL);
    switch (data[0]) {
    case 's':
        r = doc ? ctl_format_instance(doc, &text) : 0;
        break;
    case 'w':
        r = doc ? ctl_format_network_list(doc, &text) : 0;
        break;
    case 'o':
        r = doc ? ctl_format_operation(doc, &text) : 0;
        if (r == 0 && text)
            check_text(text);
        free(text);
        text = NULL;
        if (r == 0 || r == -EBADMSG)
            r = ctl_format_accepted(json_object_get(doc, "instance"), json_object_get(doc, "operation"), &text);
        break;
    case 'p': {
        /* as ctl_progress_show() reads it, both forms; one line of printable text */
        static char line[160];
        const json_t *jd = json_object_get(doc, "bytes_done"), *jt = json_object_get(doc, "bytes_total");
        const json_t *jr = json_object_get(doc, "rate_bps");

        for (int bar = 0; bar < 2 && json_is_integer(jd); bar++) {
            ctl_progress_format(line, sizeof(line), json_integer_value(jd),
                                json_is_integer(jt) ? json_integer_value(jt) : -1,
                                json_is_number(jr) ? json_number_value(jr) : -1, bar);
            if (strchr(line, '\n'))
                abort();
            check_text(line);
        }
        r = 0;
        break;
    }
    case 'v':
        r = ctl_format_event_line(doc, &text);
        break;
    case 'e': {
        char *raw = strndup((const char *)data + 1, size - 1); /* curl's body, NUL-terminated */

        if (!raw)
            abort();
        r = ctl_format_api_error(400, doc, raw, &text);
        free(raw);
        break;
    }
    default:
        r = 0;
    }
    if (r == 0 && text)
        check_text(text);
    else if (r < 0 && r != -EBADMSG && r != -ENOMEM)
        abort();
    free(text);
    json_decref(doc);
    return 0;
}

static void fuzz_done(void)
{
}

#include "tests/fuzz/replay.h"
