# popbox — one plain GNU Makefile.
#
#   make            release build (hardened) into build/release/
#   make run        build, create ./run/ (demo config, user, maildrop), start popboxd
#   make test       lint, hardening check of the release build, then an ASan+UBSan
#                   build into build/asan/: unit tests, fuzz smoke, integration
#   make fuzz       run every libFuzzer harness for FUZZ_SECONDS each
#   make bench      benchmarks under bench/
#
# Sources are picked up by wildcard: lib/*.c and popboxd/*.c (except main.c)
# form libpopbox.a; each tests/unit/test-*.c and tests/fuzz/fuzz-*.c is one
# program.  `make SANITIZE=1 BUILD=build/asan` is what `make test` uses.

BUILD    ?= build/release
SANITIZE ?=
CC       ?= cc
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 3

PKGS     := libevent libevent_pthreads libevent_openssl libssl libcrypto
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN     := -Wall -Wextra -Wformat=2 -Wshadow -Wpointer-arith -Wvla -Werror
CPPFLAGS += -Ilib -Ipopboxd -Ifetch -D_GNU_SOURCE -MMD -MP
CFLAGS   += -std=c17 $(WARN) -g -pthread $(PKG_CFLAGS)
LDLIBS   += $(PKG_LIBS) -lcrypt -pthread
# Every program records only the shared libraries it uses (popbox-deliver,
# started once per message, then does not load and start OpenSSL).
LDFLAGS  += -Wl,--as-needed

ifeq ($(SANITIZE),1)
CFLAGS   += -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
            -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=address,undefined
else
# Hardened release build: PIE, full RELRO, stack protector, fortify.
CFLAGS   += -O2 -fPIE -fstack-protector-strong -fstack-clash-protection
CPPFLAGS += -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=3
LDFLAGS  += -pie -Wl,-z,relro,-z,now
endif

LIB_SRC   := $(wildcard lib/*.c) $(filter-out popboxd/main.c,$(wildcard popboxd/*.c)) \
             $(wildcard fetch/*.c)
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
LIBPOPBOX := $(BUILD)/libpopbox.a

# popbox-fetch (issue 6) joins once its main file exists.
FETCH_MAIN := $(wildcard tools/popbox-fetch.c)
PROGRAMS  := $(BUILD)/popboxd $(BUILD)/popbox $(BUILD)/popbox-deliver \
             $(if $(FETCH_MAIN),$(BUILD)/popbox-fetch)
UNIT_SRC  := $(wildcard tests/unit/test-*.c)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all run test unit integration fuzz fuzz-smoke fuzz-build bench deps clean \
        test-build lint check-hardening
all: $(PROGRAMS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(LIBPOPBOX): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/popboxd: $(BUILD)/obj/popboxd/main.o $(LIBPOPBOX)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/popbox: $(BUILD)/obj/tools/popbox.o $(LIBPOPBOX)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/popbox-deliver: $(BUILD)/obj/tools/popbox-deliver.o $(LIBPOPBOX)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/popbox-fetch: $(BUILD)/obj/tools/popbox-fetch.o $(LIBPOPBOX)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIBPOPBOX)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIBPOPBOX)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

deps:
	@scripts/install-deps.sh

run: deps all
	@scripts/run-demo.sh $(BUILD)

# Compiles in make test run JOBS at a time (a plain `make test` is not
# given -j by CI).
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

# The test build: everything under ASan+UBSan.
test-build:
	@$(MAKE) --no-print-directory -j$(JOBS) BUILD=build/asan SANITIZE=1 \
		build/asan/popboxd build/asan/popbox build/asan/popbox-deliver \
		$(if $(FETCH_MAIN),build/asan/popbox-fetch) \
		$(UNIT_BIN:$(BUILD)/%=build/asan/%) \
		$(BENCH_BIN:$(BUILD)/%=build/asan/%)

unit: test-build
	@scripts/run-unit-tests.sh build/asan/tests

integration: test-build
	@POPBOX_BUILD=build/asan /usr/bin/python3 -m pytest -q tests/integration

# Static analysis: clang-tidy (checks in .clang-tidy) and cppcheck; any finding fails.
lint:
	@scripts/lint.sh

# The release binaries really are PIE, full RELRO, NX stack, SSP and FORTIFY.
check-hardening:
	@$(MAKE) --no-print-directory -j$(JOBS) BUILD=build/release SANITIZE= all
	@scripts/check-hardening.sh build/release

# The fuzz smoke run goes beside the integration tests (which mostly wait
# on servers and sockets); its output is shown after theirs, and either
# failing fails the target.
test: deps
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory check-hardening
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory -j$(JOBS) fuzz-build
	@mkdir -p build; \
	( $(MAKE) --no-print-directory fuzz-smoke > build/fuzz-smoke.log 2>&1; \
	  echo $$? > build/fuzz-smoke.rc ) & fuzz_pid=$$!; \
	$(MAKE) --no-print-directory integration; integration_rc=$$?; \
	wait $$fuzz_pid; fuzz_rc=$$(cat build/fuzz-smoke.rc); \
	cat build/fuzz-smoke.log; \
	[ "$$fuzz_rc" = 0 ] || echo "fuzz-smoke FAILED (exit $$fuzz_rc)"; \
	[ "$$integration_rc" = 0 ] || echo "integration FAILED (exit $$integration_rc)"; \
	[ "$$fuzz_rc" = 0 ] && [ "$$integration_rc" = 0 ]

# libFuzzer harnesses: clang, ASan+UBSan, all sources rebuilt under build/fuzz.
FUZZ_SRC := $(wildcard tests/fuzz/fuzz-*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=build/fuzz/obj/%.o)
FUZZ_CFLAGS := -std=c17 -g -O1 -Wall -Wextra -Werror -pthread $(PKG_CFLAGS) \
	-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined

build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(CPPFLAGS) $(FUZZ_CFLAGS) -c -o $@ $<

build/fuzz/fuzz-%: build/fuzz/obj/tests/fuzz/fuzz-%.o $(FUZZ_LIB_OBJ)
	clang -fsanitize=fuzzer,address,undefined -o $@ $^ $(LDLIBS)

fuzz-build: $(FUZZ_BIN)

fuzz: deps fuzz-build
	@scripts/run-fuzzers.sh $(FUZZ_SECONDS) $(FUZZ_BIN)

fuzz-smoke: fuzz-build
	@scripts/run-fuzzers.sh $(FUZZ_SMOKE_SECONDS) $(FUZZ_BIN)

bench: deps all $(BENCH_BIN)
	@bench/run.sh $(BUILD)

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
