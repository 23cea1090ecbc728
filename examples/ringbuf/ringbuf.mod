./ringbuf.o
