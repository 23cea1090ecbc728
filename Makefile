# Thin wrappers over `cargo xtask`; `make module KDIR=...` builds the module against your own
# Rust-enabled kernel build tree (pass LLVM=1 or LLVM=-19, RUSTC=... as that tree was built).
.PHONY: test run shell build clippy header check selftest bench module clean

test:
	cargo xtask test

run:
	cargo xtask run

shell:
	cargo xtask shell

selftest:
	cargo xtask selftest
	cargo xtask selftest --bugs

bench:
	cargo xtask bench

build:
	cargo xtask build

clippy:
	cargo xtask build --clippy
	cargo clippy --workspace --all-targets -- -D warnings

header:
	cargo xtask header

check:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace
	cargo xtask header --check

KDIR ?= /lib/modules/$(shell uname -r)/build
module:
	$(MAKE) -C $(KDIR) M=$(CURDIR)/module modules

clean:
	$(MAKE) -C $(KDIR) M=$(CURDIR)/module clean 2>/dev/null || true
	cargo clean
