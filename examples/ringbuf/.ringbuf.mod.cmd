savedcmd_ringbuf.mod := printf '%s\n'   ringbuf.o | awk '!x[$$0]++ { print("./"$$0) }' > ringbuf.mod
