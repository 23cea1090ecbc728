/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * ringbuf's user-space interface: /dev/ringbuf and its ioctls. Included by the module and by
 * its guest suite alike, so the numbers are defined once.
 */
#ifndef RINGBUF_H
#define RINGBUF_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define RINGBUF_DEVICE "/dev/ringbuf"
#define RINGBUF_IOC_MAGIC 'r'
/* How many bytes the buffer holds now. */
#define RINGBUF_IOC_FILL _IOR(RINGBUF_IOC_MAGIC, 1, __u32)
/* Empties the buffer. */
#define RINGBUF_IOC_RESET _IO(RINGBUF_IOC_MAGIC, 2)

#endif
