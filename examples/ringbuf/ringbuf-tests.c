// SPDX-License-Identifier: GPL-2.0
/*
 * ringbuf-tests: the guest suite of the ringbuf module, printing KTAP.
 *
 *   ringbuf-tests [--ktap PATH] [--filter GLOB[,GLOB...]] [--timeout SECONDS] [--list]
 *
 * Each test runs in a process of its own (its own process group), so that a test that hangs
 * is killed after --timeout seconds (default 10) with everything it started, and cannot reach
 * the next one. Before each test the suite writes `$HARNESS_TEST_MARKER NAME` to /dev/kmsg:
 * the harness names the test during which a kernel problem appeared from the last marker
 * before it on the console.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ringbuf.h"

static FILE *ktap;

static void diag(const char *fmt, ...)
{
	va_list ap;

	fputs("# ", ktap);
	va_start(ap, fmt);
	vfprintf(ktap, fmt, ap);
	va_end(ap);
	fputc('\n', ktap);
	fflush(ktap);
}

/* Fails the test (returns 1 from it) with the file, line, condition and a message. */
#define CHECK(cond, ...)                                                         \
	do {                                                                     \
		if (!(cond)) {                                                   \
			diag("%s:%d: %s", __FILE__, __LINE__, #cond);            \
			diag(__VA_ARGS__);                                       \
			return 1;                                                \
		}                                                                \
	} while (0)

static int open_dev(int flags)
{
	int fd = open(RINGBUF_DEVICE, flags);

	if (fd < 0)
		diag("open %s: %s", RINGBUF_DEVICE, strerror(errno));
	return fd;
}

/* The device's capacity, from its module parameter. */
static long capacity(void)
{
	FILE *f = fopen("/sys/module/ringbuf/parameters/size", "r");
	long n = -1;

	if (f) {
		if (fscanf(f, "%ld", &n) != 1)
			n = -1;
		fclose(f);
	}
	return n;
}

static unsigned int fill_of(int fd)
{
	__u32 fill = ~0u;

	if (ioctl(fd, RINGBUF_IOC_FILL, &fill))
		diag("RINGBUF_IOC_FILL: %s", strerror(errno));
	return fill;
}

/* An open, emptied device: every test starts from here. */
static int fresh(int flags)
{
	int fd = open_dev(flags);

	if (fd >= 0 && ioctl(fd, RINGBUF_IOC_RESET)) {
		diag("RINGBUF_IOC_RESET: %s", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static void pattern(char *buf, size_t n, unsigned int seed)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (char)(seed + i * 7 + i / 251);
}

static int bytes_come_back_in_order_and_are_taken_once(void)
{
	const char msg[] = "period elapsed, twice";
	char got[64];
	int fd = fresh(O_RDWR);

	CHECK(fd >= 0, "no device");
	CHECK(write(fd, msg, sizeof(msg)) == (ssize_t)sizeof(msg), "write: %s", strerror(errno));
	CHECK(fill_of(fd) == sizeof(msg), "fill %u after writing %zu", fill_of(fd), sizeof(msg));
	CHECK(read(fd, got, sizeof(got)) == (ssize_t)sizeof(msg), "read: %s", strerror(errno));
	CHECK(!memcmp(got, msg, sizeof(msg)), "read back %.*s", (int)sizeof(msg), got);
	CHECK(fill_of(fd) == 0, "fill %u after reading everything", fill_of(fd));
	close(fd);
	return 0;
}

static int an_empty_nonblocking_read_is_eagain(void)
{
	char c;
	int fd = fresh(O_RDWR | O_NONBLOCK);

	CHECK(fd >= 0, "no device");
	errno = 0;
	CHECK(read(fd, &c, 1) == -1 && errno == EAGAIN, "read of an empty buffer: errno %d", errno);
	close(fd);
	return 0;
}

static int a_full_buffer_takes_what_fits_then_refuses(void)
{
	long cap = capacity();
	char *in, *out;
	int fd = fresh(O_RDWR | O_NONBLOCK);

	CHECK(fd >= 0 && cap > 0, "no device or no size parameter");
	in = malloc(cap + 100);
	out = malloc(cap + 100);
	CHECK(in && out, "out of memory");
	pattern(in, cap + 100, 3);
	CHECK(write(fd, in, cap + 100) == cap, "a write of %ld bytes into %ld", cap + 100, cap);
	errno = 0;
	CHECK(write(fd, in, 1) == -1 && errno == EAGAIN, "a write into a full buffer: errno %d",
	      errno);
	CHECK(fill_of(fd) == cap, "fill %u of %ld", fill_of(fd), cap);
	CHECK(read(fd, out, cap + 100) == cap, "a read of the full buffer");
	CHECK(!memcmp(in, out, cap), "the bytes read differ from those written");
	close(fd);
	return 0;
}

static int bytes_wrap_around_the_end_in_order(void)
{
	long cap = capacity();
	size_t n;
	char *in, *out;
	int fd = fresh(O_RDWR | O_NONBLOCK);

	CHECK(fd >= 0 && cap > 3, "no device or a tiny size");
	n = cap * 3 / 4;
	in = malloc(n);
	out = malloc(n);
	CHECK(in && out, "out of memory");
	/* Three rounds of 3/4 of the capacity: the second and third cross the end. */
	for (unsigned int round = 0; round < 3; round++) {
		pattern(in, n, round * 31 + 1);
		CHECK(write(fd, in, n) == (ssize_t)n, "round %u: write", round);
		memset(out, 0, n);
		CHECK(read(fd, out, n) == (ssize_t)n, "round %u: read", round);
		for (size_t i = 0; i < n; i++)
			CHECK(in[i] == out[i], "round %u: byte %zu is %d, written %d", round, i,
			      out[i], in[i]);
	}
	close(fd);
	return 0;
}

static int a_blocking_read_waits_for_a_write(void)
{
	char c = 0;
	struct timespec t0, t1;
	long ms;
	pid_t writer;
	int status, fd = fresh(O_RDWR);

	CHECK(fd >= 0, "no device");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	writer = fork();
	CHECK(writer >= 0, "fork: %s", strerror(errno));
	if (writer == 0) {
		usleep(100 * 1000);
		_exit(write(fd, "x", 1) == 1 ? 0 : 1);
	}
	CHECK(read(fd, &c, 1) == 1 && c == 'x', "blocking read: %s, byte %d", strerror(errno), c);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	CHECK(ms >= 90, "the read returned after %ld ms, before the write", ms);
	CHECK(waitpid(writer, &status, 0) == writer && WIFEXITED(status) && !WEXITSTATUS(status),
	      "the writer failed");
	close(fd);
	return 0;
}

static int poll_reports_readable_and_writable(void)
{
	long cap = capacity();
	char *in;
	struct pollfd p;
	int fd = fresh(O_RDWR | O_NONBLOCK);

	CHECK(fd >= 0 && cap > 0, "no device");
	p = (struct pollfd){ .fd = fd, .events = POLLIN | POLLOUT };
	CHECK(poll(&p, 1, 0) == 1 && p.revents == POLLOUT, "empty: revents %#x", p.revents);
	CHECK(write(fd, "a", 1) == 1, "write");
	CHECK(poll(&p, 1, 0) == 1 && p.revents == (POLLIN | POLLOUT), "one byte: revents %#x",
	      p.revents);
	in = calloc(cap, 1);
	CHECK(in, "out of memory");
	CHECK(write(fd, in, cap) == cap - 1, "filling the rest");
	CHECK(poll(&p, 1, 0) == 1 && p.revents == POLLIN, "full: revents %#x", p.revents);
	close(fd);
	return 0;
}

static int bad_arguments_are_refused_and_move_nothing(void)
{
	char *unmapped;
	int fd = fresh(O_RDWR | O_NONBLOCK);

	CHECK(fd >= 0, "no device");
	unmapped = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(unmapped != MAP_FAILED, "mmap");
	errno = 0;
	CHECK(ioctl(fd, _IO(RINGBUF_IOC_MAGIC, 99)) == -1 && errno == ENOTTY,
	      "an unknown ioctl: errno %d", errno);
	errno = 0;
	CHECK(ioctl(fd, RINGBUF_IOC_FILL, unmapped) == -1 && errno == EFAULT,
	      "FILL to an unmapped address: errno %d", errno);
	errno = 0;
	CHECK(write(fd, unmapped, 16) == -1 && errno == EFAULT, "a write from unmapped memory");
	CHECK(fill_of(fd) == 0, "a faulting write stored %u bytes", fill_of(fd));
	CHECK(write(fd, "abc", 3) == 3, "write");
	errno = 0;
	CHECK(read(fd, unmapped, 3) == -1 && errno == EFAULT, "a read into unmapped memory");
	CHECK(fill_of(fd) == 3, "a faulting read took bytes: fill %u", fill_of(fd));
	close(fd);
	return 0;
}

static const struct test {
	const char *name;
	int (*run)(void);
} tests[] = {
#define T(f) { #f, f }
	T(bytes_come_back_in_order_and_are_taken_once),
	T(an_empty_nonblocking_read_is_eagain),
	T(a_full_buffer_takes_what_fits_then_refuses),
	T(bytes_wrap_around_the_end_in_order),
	T(a_blocking_read_waits_for_a_write),
	T(poll_reports_readable_and_writable),
	T(bad_arguments_are_refused_and_move_nothing),
#undef T
};

#define N_TESTS (sizeof(tests) / sizeof(tests[0]))

static int selected(const char *filter, const char *name)
{
	char globs[1024], *save = NULL;

	if (!filter)
		return 1;
	snprintf(globs, sizeof(globs), "%s", filter);
	for (char *g = strtok_r(globs, ",", &save); g; g = strtok_r(NULL, ",", &save))
		if (!fnmatch(g, name, 0))
			return 1;
	return 0;
}

static void mark(const char *name)
{
	const char *marker = getenv("HARNESS_TEST_MARKER");
	char line[512];
	int fd, n;

	if (!marker)
		return;
	/* One write: one kernel log record. */
	n = snprintf(line, sizeof(line), "%s%s\n", marker, name);
	fd = open("/dev/kmsg", O_WRONLY);
	if (fd >= 0 && n > 0 && (size_t)n < sizeof(line) && write(fd, line, n) != n)
		diag("writing the test marker to /dev/kmsg: %s", strerror(errno));
	if (fd >= 0)
		close(fd);
}

static long ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Runs one test in its own process group; 0 if it passed. */
static int run_one(const struct test *t, int timeout_s)
{
	struct timespec t0;
	int status;
	pid_t pid, done;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	fflush(ktap);
	pid = fork();
	if (pid < 0) {
		diag("fork: %s", strerror(errno));
		return 1;
	}
	if (pid == 0) {
		setpgid(0, 0);
		_exit(t->run() ? 1 : 0);
	}
	setpgid(pid, pid);
	for (;;) {
		done = waitpid(pid, &status, WNOHANG);
		if (done == pid)
			break;
		if (ms_since(&t0) > timeout_s * 1000L) {
			kill(-pid, SIGKILL);
			waitpid(pid, &status, 0);
			diag("timed out after %d s", timeout_s);
			status = -1;
			break;
		}
		usleep(10 * 1000);
	}
	/* Whatever the test left behind in its group goes with it. */
	kill(-pid, SIGKILL);
	diag("duration_ms: %ld", ms_since(&t0));
	if (status == -1)
		return 1;
	if (WIFSIGNALED(status))
		diag("killed by signal %d", WTERMSIG(status));
	return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(int argc, char **argv)
{
	const char *filter = NULL;
	int timeout_s = 10, n = 0, failed = 0;

	ktap = stdout;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--list")) {
			for (size_t k = 0; k < N_TESTS; k++)
				puts(tests[k].name);
			return 0;
		} else if (!strcmp(argv[i], "--ktap") && i + 1 < argc) {
			ktap = fopen(argv[++i], "w");
			if (!ktap) {
				perror(argv[i]);
				return 2;
			}
		} else if (!strcmp(argv[i], "--filter") && i + 1 < argc) {
			filter = argv[++i];
		} else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
			timeout_s = atoi(argv[++i]);
		} else {
			fprintf(stderr, "usage: %s [--ktap PATH] [--filter GLOBS] [--timeout S] [--list]\n",
				argv[0]);
			return 2;
		}
	}
	for (size_t k = 0; k < N_TESTS; k++)
		n += selected(filter, tests[k].name);
	fprintf(ktap, "KTAP version 1\n1..%d\n", n);
	fflush(ktap);
	n = 0;
	for (size_t k = 0; k < N_TESTS; k++) {
		if (!selected(filter, tests[k].name))
			continue;
		mark(tests[k].name);
		int bad = run_one(&tests[k], timeout_s);

		failed += bad;
		fprintf(ktap, "%s %d %s\n", bad ? "not ok" : "ok", ++n, tests[k].name);
		fflush(ktap);
	}
	return failed ? 1 : 0;
}
