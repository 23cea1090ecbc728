// SPDX-License-Identifier: GPL-2.0
/*
 * ringbuf: a byte FIFO behind /dev/ringbuf, the test harness's second client (a C module,
 * tested by the same commands as pcmsig: `cargo xtask test --target ringbuf`).
 *
 * write() stores what fits, in order, and never blocks: a short count when the buffer is
 * nearly full, -EAGAIN when it is full. read() takes the oldest bytes; on an empty buffer it
 * waits for a write (-EAGAIN with O_NONBLOCK). poll() reports both. A faulting user buffer is
 * -EFAULT and moves nothing. RINGBUF_IOC_FILL reads how many bytes are stored,
 * RINGBUF_IOC_RESET empties the buffer. One buffer for the whole device, `size` bytes.
 */
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/wait.h>

#include "ringbuf.h"

static unsigned int size = 4096;
module_param(size, uint, 0444);
MODULE_PARM_DESC(size, "capacity in bytes, 1 to 1048576 (default 4096)");

static struct {
	struct mutex lock;
	wait_queue_head_t readable;
	char *buf;
	size_t head; /* the oldest byte, under lock */
	size_t fill; /* bytes stored, under lock */
} rb;

static ssize_t rb_read(struct file *file, char __user *to, size_t count, loff_t *ppos)
{
	size_t n, first;
	ssize_t ret;

	if (!count)
		return 0;
	if (mutex_lock_interruptible(&rb.lock))
		return -ERESTARTSYS;
	while (!rb.fill) {
		mutex_unlock(&rb.lock);
		if (file->f_flags & O_NONBLOCK)
			return -EAGAIN;
		if (wait_event_interruptible(rb.readable, READ_ONCE(rb.fill)))
			return -ERESTARTSYS;
		if (mutex_lock_interruptible(&rb.lock))
			return -ERESTARTSYS;
	}
	n = min(count, rb.fill);
	first = min_t(size_t, n, size - rb.head);
	if (copy_to_user(to, rb.buf + rb.head, first) ||
	    copy_to_user(to + first, rb.buf, n - first)) {
		ret = -EFAULT; /* nothing consumed: the bytes stay for the next read */
		goto out;
	}
	rb.head = (rb.head + n) % size;
	rb.fill -= n;
	ret = n;
out:
	mutex_unlock(&rb.lock);
	return ret;
}

static ssize_t rb_write(struct file *file, const char __user *from, size_t count, loff_t *ppos)
{
	size_t n, tail, first;
	ssize_t ret;

	if (!count)
		return 0;
	if (mutex_lock_interruptible(&rb.lock))
		return -ERESTARTSYS;
	n = min_t(size_t, count, size - rb.fill);
	if (!n) {
		ret = -EAGAIN;
		goto out;
	}
	tail = (rb.head + rb.fill) % size;
	first = min_t(size_t, n, size - tail);
	if (copy_from_user(rb.buf + tail, from, first) ||
	    copy_from_user(rb.buf, from + first, n - first)) {
		ret = -EFAULT; /* nothing stored */
		goto out;
	}
	rb.fill += n;
	/* The invariant every path keeps: a report, not a crash, if a change breaks it. */
	if (WARN_ON_ONCE(rb.fill > size))
		rb.fill = size;
	ret = n;
	wake_up_interruptible(&rb.readable);
out:
	mutex_unlock(&rb.lock);
	return ret;
}

static __poll_t rb_poll(struct file *file, poll_table *wait)
{
	__poll_t mask = 0;

	poll_wait(file, &rb.readable, wait);
	mutex_lock(&rb.lock);
	if (rb.fill)
		mask |= EPOLLIN | EPOLLRDNORM;
	if (rb.fill < size)
		mask |= EPOLLOUT | EPOLLWRNORM;
	mutex_unlock(&rb.lock);
	return mask;
}

static long rb_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	u32 fill;

	switch (cmd) {
	case RINGBUF_IOC_FILL:
		mutex_lock(&rb.lock);
		fill = rb.fill;
		mutex_unlock(&rb.lock);
		return put_user(fill, (u32 __user *)arg);
	case RINGBUF_IOC_RESET:
		mutex_lock(&rb.lock);
		rb.head = 0;
		rb.fill = 0;
		mutex_unlock(&rb.lock);
		return 0;
	default:
		return -ENOTTY;
	}
}

static const struct file_operations rb_fops = {
	.owner = THIS_MODULE,
	.read = rb_read,
	.write = rb_write,
	.poll = rb_poll,
	.unlocked_ioctl = rb_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice rb_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "ringbuf",
	.fops = &rb_fops,
	.mode = 0666,
};

static int __init rb_init(void)
{
	int ret;

	if (size < 1 || size > (1U << 20)) {
		pr_err("ringbuf: size=%u is outside 1..1048576\n", size);
		return -EINVAL;
	}
	mutex_init(&rb.lock);
	init_waitqueue_head(&rb.readable);
	rb.buf = kvmalloc(size, GFP_KERNEL);
	if (!rb.buf)
		return -ENOMEM;
	ret = misc_register(&rb_misc);
	if (ret)
		kvfree(rb.buf);
	return ret;
}

static void __exit rb_exit(void)
{
	misc_deregister(&rb_misc);
	kvfree(rb.buf);
}

module_init(rb_init);
module_exit(rb_exit);
MODULE_DESCRIPTION("A byte FIFO misc device: the test harness's C client");
MODULE_LICENSE("GPL");
