# Switchyard: the two-command quick start is `make demo` and `make test`.
#   make deps      install missing Debian packages (idempotent; quiet when all are present)
#   make build     configure and build into build/ (CUDA parts too when nvcc exists)
#   make test      deps + build + ctest (parallel, per-test timeouts, output on failure)
#   make demo      the main job: a small reference training run on local ranks
#   make bench     the benchmarks (long; results go to docs/perf.md by hand)
#   make sanitize  build and test under the asan (ASan+UBSan) and tsan presets
#   make install   install into PREFIX (default /usr/local)
SHELL := /bin/bash
BUILD ?= build
PRESET ?= release
JOBS ?= $(shell nproc)
PREFIX ?= /usr/local
CTEST_ARGS ?=

.PHONY: all deps build test demo bench sanitize install clean format

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/build.ninja:
	cmake --preset $(PRESET) -B $(BUILD)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest -j $(JOBS) --output-on-failure --timeout 300 $(CTEST_ARGS)

demo: build
	@scripts/demo.sh $(BUILD)

bench: build
	@scripts/bench.sh $(BUILD)

# ASan+UBSan runs every test; TSan runs the layers that start threads of their own (comm's
# progress thread, dispatch's async helper, the pipeline executor, the launcher's relay);
# UCX's memory hooks are switched off there, since they crash under TSan.
sanitize: deps
	cmake --preset asan && cmake --build build-asan -j $(JOBS) && cd build-asan && ctest -j $(JOBS) --output-on-failure -LE slow
	cmake --preset tsan && cmake --build build-tsan -j $(JOBS) && cd build-tsan && \
	  UCX_MEM_MMAP_HOOK_MODE=none UCX_MEM_EVENTS=no ctest -j $(JOBS) --output-on-failure -L 'common|comm|dispatch|pipeline|launcher' -LE slow

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

format:
	git ls-files '*.h' '*.cc' '*.cu' | xargs clang-format -i

clean:
	rm -rf $(BUILD) build-asan build-tsan build-debug
