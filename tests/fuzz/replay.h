/* replay.h: the main() of a harness built without libFuzzer (the normal
 * build): feed each file named on the command line to
 * LLVMFuzzerTestOneInput() once, as `make check` does with the corpora
 * (tests/integration/fuzz_corpus.sh). Each input sits in a buffer of exactly
 * its size, so a sanitizer build catches reads past its end. Include it
 * last, after the harness's static fuzz_done() (may do nothing), which
 * frees what the harness keeps between inputs: called after the last input
 * here, at exit under libFuzzer. */
#ifndef CA_TESTS_FUZZ_REPLAY_H
#define CA_TESTS_FUZZ_REPLAY_H

#ifndef FUZZING_ENGINE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *replay_current; /* the input being run, for a crash report */

/* A harness that aborts (a broken invariant) says on which input, then
 * dies as it would. (Sanitizer reports have their own handlers: left alone.) */
static void replay_on_fatal(int sig)
{
    static const char what[] = "replay: failed on input ";

    if (replay_current) {
        (void)!write(2, what, sizeof(what) - 1);
        (void)!write(2, replay_current, strlen(replay_current));
        (void)!write(2, "\n", 1);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

int main(int argc, char **argv)
{
    const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];

    signal(SIGABRT, replay_on_fatal);

    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        struct stat st;
        uint8_t *buf;
        size_t n;

        if (!f || fstat(fileno(f), &st) < 0) {
            perror(argv[i]);
            return 1;
        }
        buf = malloc(st.st_size ? (size_t)st.st_size : 1);
        if (!buf)
            abort();
        n = fread(buf, 1, (size_t)st.st_size, f);
        fclose(f);
        replay_current = argv[i];
        LLVMFuzzerTestOneInput(buf, n);
        replay_current = NULL;
        free(buf);
    }
    fuzz_done();
    printf("%s: %d inputs, no crash\n", name, argc - 1);
    return 0;
}
#else
#include <stdlib.h>

__attribute__((constructor)) static void fuzz_register_done(void)
{
    atexit(fuzz_done);
}
#endif

#endif
