/* The test workers' malloc_trim (tests/conftest.py, _malloc_per_worker), preloaded into them.
 *
 * Libraries call glibc's malloc_trim(0) on their own: protobuf's Python extension (upb) every
 * 10,000 frees of its arena blocks, so while an ONNX model is built and dropped; OpenVINO each
 * time a compiled model is destroyed. It hands every free page of every heap back to the kernel,
 * and the worker's next model faults them in again, zeroed: test_onnx.py's every-model test faulted
 * in 29 GB of huge pages for a worker whose peak is 7.9 GB (2026-12-04).
 *
 * Here it trims only while the process holds more than SE_MULTI_TRIM_ABOVE_MB of resident memory
 * (unset: always, as glibc does): below that, freed memory stays for the next allocation; above
 * it, the process gives back what it can, as before, so it stays bounded. Calls that name glibc's
 * own malloc_trim (ctypes on the C library, as the memory measurements do) still reach it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

/* resident bytes from /proc/self/statm (no malloc: this runs inside allocators' callers), or -1 */
static long resident_bytes(void) {
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *rest;
    strtol(buf, &rest, 10); /* total program size; the resident count follows */
    long pages = strtol(rest, NULL, 10);
    return pages * sysconf(_SC_PAGESIZE);
}

int malloc_trim(size_t pad) {
    static int (*glibc_trim)(size_t);
    static long above = -1;
    if (!glibc_trim)
        glibc_trim = (int (*)(size_t))dlsym(RTLD_NEXT, "malloc_trim");
    if (above < 0) {
        const char *mb = getenv("SE_MULTI_TRIM_ABOVE_MB");
        above = mb ? atol(mb) * 1048576L : 0;
    }
    long resident = resident_bytes();
    if (resident >= 0 && resident < above)
        return 0; /* nothing released */
    return glibc_trim ? glibc_trim(pad) : 0;
}
