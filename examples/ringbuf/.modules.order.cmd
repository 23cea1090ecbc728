savedcmd_modules.order := {   echo ringbuf.o; :; } > modules.order
