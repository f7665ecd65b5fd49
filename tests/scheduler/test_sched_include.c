/* The scheduler's header shares its name with the C library's <sched.h>,
 * which <pthread.h> includes.  A user of the scheduler must still get the
 * system header there (cpu_set_t, sched_yield) and ours through quotes.
 * This compiles only if the build keeps the two apart. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>

#include "sched.h"

int main(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    sched_yield();
    sched_config c;
    sched_config_default(&c);
    return c.max_num_seqs == 8 && CPU_COUNT(&set) == 0 ? 0 : 1;
}
