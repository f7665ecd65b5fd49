/* tests/client/harness.h - starting the scripted server and asa-bench as
 * child processes for the asa-bench tests.  Both binaries come in as the
 * test's argv[1] (asa-bench) and argv[2] (scripted server). */
#ifndef ASA_TEST_BENCH_HARNESS_H
#define ASA_TEST_BENCH_HARNESS_H

#include <jansson.h>
#include <sys/types.h>

extern const char *h_bench_bin;
extern const char *h_server_bin;

/* Reads the two binary paths from argv; returns 0 or -1 (usage printed). */
int h_init(int argc, char **argv);

typedef struct h_server {
    pid_t pid;
    int port;
} h_server;

/* Starts the scripted server with the NULL-terminated extra arguments on a
 * free port.  Returns 0 or -1. */
int h_server_start(h_server *s, const char *const *args);
void h_server_stop(h_server *s);

/* Runs asa-bench against port (0: do not add --base-url) with the extra
 * arguments, output to files under a fresh temporary directory, and a
 * timeout.  Returns the exit status (>= 0), or -1 if it could not run or
 * timed out.  *out and *err (may be NULL) receive the captured stdout and
 * stderr (malloc'd). */
int h_bench_run(int port, const char *const *args, double timeout_s, char **out,
                char **err);

/* When > 0, the next h_bench_run sends asa-bench SIGINT this many seconds
 * after starting it (reset to 0 by the run). */
extern double h_interrupt_after;

/* A path in the test's temporary directory (static buffer per call slot 0..3). */
const char *h_tmp(const char *name, int slot);

/* Loads a JSON file; NULL on failure. */
json_t *h_load_json(const char *path);
/* Number member; aborts the test (cmocka fail) if absent. */
double h_num(json_t *o, const char *key);

#endif
