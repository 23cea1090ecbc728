// SPDX-License-Identifier: GPL-2.0
/*
 * The coverage build of pcmsig (`cargo xtask coverage`), linked into a copy of the module whose
 * Rust code is compiled with LLVM's SanitizerCoverage (`-Cpasses=sancov-module`, trace-pc):
 * every edge of the module's code calls __sanitizer_cov_trace_pc() below, in whatever context
 * it runs (process, hard IRQ, softirq). Unlike KCOV, which records for one task only, this
 * callback counts every call, from every context, in a lock-free table of program counters;
 * this file itself is not instrumented. /sys/kernel/debug/pcmsig_coverage shows the table:
 * one line per edge reached, `TEXT INIT EXIT HITS TESTS`: the edge's return address as offsets
 * from an anchor in each of the module's code sections (__sanitizer_cov_trace_pc in .text,
 * init_module in .init.text, cleanup_module in .exit.text; the host knows the anchors' places
 * and keeps the one offset that falls in its section), how often it ran, and the numbers of the
 * tests that ran it (a list, as %*pbl prints it). Writing a number there sets the test that runs
 * now. At unload the module writes its table to the port the guest named: so nothing is lost
 * with the module, not even what its exit path runs. Never part of the real module.
 */
#include <linux/atomic.h>
#include <linux/bitmap.h>
#include <linux/debugfs.h>
#include <linux/hash.h>
#include <linux/kernel.h>
#include <linux/fs.h>
#include <linux/seq_buf.h>
#include <linux/seq_file.h>
#include <linux/vmalloc.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#define COV_BITS 14
#define COV_SLOTS (1UL << COV_BITS)
/* Tests the bitmaps tell apart; later ones count as the last. */
#define COV_TESTS 256

void pcmsig_cov_register(void);
void pcmsig_cov_unregister(void);
void __sanitizer_cov_trace_pc(void);
/* Defined by the Rust module! macro. */
int init_module(void);
void cleanup_module(void);

static unsigned long cov_pc[COV_SLOTS];
static atomic_long_t cov_hits[COV_SLOTS];
static unsigned long cov_tests[COV_SLOTS][BITS_TO_LONGS(COV_TESTS)];
static atomic_t cov_test = ATOMIC_INIT(0);
static atomic_t cov_overflow = ATOMIC_INIT(0);
static struct dentry *cov_file;
/* Where the table goes at unload (set by the guest). */
static char cov_port[64];
/* The most text the table makes (its 16384 slots, each well under 64 bytes). */
#define COV_TEXT_MAX (COV_SLOTS * 64)

void notrace __sanitizer_cov_trace_pc(void)
{
	unsigned long pc = _RET_IP_;
	unsigned long slot = hash_long(pc, COV_BITS);
	unsigned long i;

	for (i = 0; i < COV_SLOTS; i++, slot = (slot + 1) & (COV_SLOTS - 1)) {
		unsigned long cur = READ_ONCE(cov_pc[slot]);

		if (!cur) {
			cur = cmpxchg(&cov_pc[slot], 0UL, pc);
			if (!cur)
				cur = pc;
		}
		if (cur == pc) {
			unsigned int t = min_t(unsigned int, atomic_read(&cov_test), COV_TESTS - 1);

			atomic_long_inc(&cov_hits[slot]);
			set_bit(t, cov_tests[slot]);
			return;
		}
	}
	atomic_inc(&cov_overflow);
}

/* The anchors' addresses (modpost allows a reference from .ref.text to .init.text; the value
 * of init_module stays a valid number after the init code is freed). */
static unsigned long __ref cov_init_anchor(void)
{
	unsigned long a = (unsigned long)init_module;

	/* Opaque to the compiler, which would otherwise fold the constant into the caller. */
	asm volatile("" : "+r"(a));
	return a;
}

static unsigned long __ref cov_exit_anchor(void)
{
	unsigned long a = (unsigned long)cleanup_module;

	asm volatile("" : "+r"(a));
	return a;
}

/* The table as text: `overflow N`, then a line per edge that ran. */
static void cov_format(struct seq_buf *s)
{
	unsigned long i, init_anchor = cov_init_anchor(), exit_anchor = cov_exit_anchor();

	seq_buf_printf(s, "overflow %d\n", atomic_read(&cov_overflow));
	for (i = 0; i < COV_SLOTS; i++) {
		unsigned long pc = READ_ONCE(cov_pc[i]);
		long hits = atomic_long_read(&cov_hits[i]);

		if (pc && hits)
			seq_buf_printf(s, "%ld %ld %ld %ld %*pbl\n",
				       (long)(pc - (unsigned long)__sanitizer_cov_trace_pc),
				       (long)(pc - init_anchor), (long)(pc - exit_anchor), hits,
				       COV_TESTS, cov_tests[i]);
	}
}

static int cov_show(struct seq_file *m, void *v)
{
	struct seq_buf s;
	char *buf = vmalloc(COV_TEXT_MAX);

	if (!buf)
		return -ENOMEM;
	seq_buf_init(&s, buf, COV_TEXT_MAX);
	cov_format(&s);
	seq_write(m, buf, seq_buf_used(&s));
	vfree(buf);
	return seq_buf_has_overflowed(&s) ? -EOVERFLOW : 0;
}

static int cov_open(struct inode *inode, struct file *file)
{
	return single_open_size(file, cov_show, NULL, COV_TEXT_MAX);
}

/*
 * At unload, the table would go with the module, and the code that runs while the module goes
 * (its exit path) after any read of the file: so the module's last act is to write its table
 * to the port the guest named (`port PATH`), framed as the guest frames the tables it sends.
 */
static void cov_send(void)
{
	struct seq_buf s;
	struct file *port;
	loff_t pos = 0;
	char *buf;

	if (!cov_port[0])
		return;
	buf = vmalloc(COV_TEXT_MAX);
	if (!buf)
		return;
	seq_buf_init(&s, buf, COV_TEXT_MAX);
	seq_buf_puts(&s, "begin table\n");
	cov_format(&s);
	seq_buf_puts(&s, "end table\n");
	port = filp_open(cov_port, O_WRONLY | O_NOCTTY, 0);
	if (!IS_ERR(port)) {
		kernel_write(port, buf, seq_buf_used(&s), &pos);
		filp_close(port, NULL);
	} else {
		pr_err("pcmsig coverage: cannot open %s: %ld\n", cov_port, PTR_ERR(port));
	}
	vfree(buf);
}

/* `N`: test N runs from now on; `port PATH`: where the table goes at unload. */
static ssize_t cov_write(struct file *file, const char __user *buf, size_t len, loff_t *off)
{
	char cmd[80] = {};
	unsigned int t;

	if (len >= sizeof(cmd))
		return -EINVAL;
	if (copy_from_user(cmd, buf, len))
		return -EFAULT;
	if (!strncmp(cmd, "port ", 5)) {
		strscpy(cov_port, strim(cmd + 5), sizeof(cov_port));
		return len;
	}
	if (kstrtouint(strim(cmd), 10, &t))
		return -EINVAL;
	atomic_set(&cov_test, t);
	return len;
}

static const struct file_operations cov_fops = {
	.owner = THIS_MODULE,
	.open = cov_open,
	.read = seq_read,
	.llseek = seq_lseek,
	.release = single_release,
	.write = cov_write,
};

void pcmsig_cov_register(void)
{
	cov_file = debugfs_create_file("pcmsig_coverage", 0600, NULL, NULL, &cov_fops);
}

void pcmsig_cov_unregister(void)
{
	debugfs_remove(cov_file);
	cov_send();
}
