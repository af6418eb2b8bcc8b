/*
 * computectl: the operator's command line for compute-agent.
 * Everything but process setup lives in the other cli/ files (see cli-internal.h).
 */
#include <stdio.h>
#include <stdlib.h>

#include <curl/curl.h>

#include "cli-internal.h"

int main(int argc, char *argv[]) {
        int r;

        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                fputs("error: cannot initialize libcurl\n", stderr);
                return CTL_EXIT_FAILURE;
        }
        r = ctl_main(argc, argv, stdout, stderr, getenv);
        curl_global_cleanup();
        if (fflush(stdout) != 0 && r == CTL_EXIT_OK)
                r = CTL_EXIT_FAILURE;   /* e.g. stdout is a full disk or a closed pipe */
        return r;
}
