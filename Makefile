# The two commands that matter: `make run` and `make test`.
.PHONY: all setup run test bench bench-host size fmt clippy clean

IMAGE := target/aarch64-unknown-none/release/smmuv3-image

all: test

setup:
	@qemu/setup.sh
	@# Commits refuse build output and files over 400 kB (.githooks/pre-commit).
	@git config core.hooksPath .githooks 2>/dev/null || true

# Boots the image under QEMU (extra QEMU arguments: QEMU_ARGS="...").
run: setup
	cargo build --release
	@$(MAKE) --no-print-directory size
	cargo run --release

# Host unit tests + every on-target suite, one verdict line at the end.
test: setup
	tests/collect.sh

# Benchmark mode (filled in with the driver demo).
bench: setup
	cargo run --release --features bench
	@$(MAKE) --no-print-directory bench-host

# Stage-2 tables against aarch64-paging's, on the host (optimised build).
HOST := $(shell rustc -vV | sed -n 's/^host: //p')
bench-host:
	cargo bench --no-default-features --bench vs_aarch64_paging --target $(HOST)

# Image size (text, data, bss; loaded = text + data), then its code by
# source (driver, image, core/alloc, dependencies) from the DWARF line table.
size:
	@if command -v llvm-size >/dev/null 2>&1; then llvm-size $(IMAGE); \
	elif command -v size >/dev/null 2>&1; then size $(IMAGE); \
	else readelf -SW $(IMAGE); fi
	@if command -v llvm-dwarfdump >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1; then \
	  echo "code by source (inlined code counted where its source is):"; tools/code-size.py $(IMAGE); fi

fmt:
	cargo fmt

clippy:
	cargo clippy --release --bins --tests

clean:
	cargo clean
