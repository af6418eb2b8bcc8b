# compute-agent build. `make`, `make check`, `make bench`, `make install`,
# `make SANITIZE=address,undefined check`, `make valgrind`.
PREFIX      ?= /usr/local
SYSCONFDIR  ?= /etc
UNITDIR     ?= $(PREFIX)/lib/systemd/system
DOCDIR      ?= $(PREFIX)/share/doc/compute-agent
MANDIR      ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
BUILD       ?= build
CC          ?= cc
PKG_CONFIG  ?= pkg-config
VERSION     := 0.1.0

PKGS := libvirt libuv jansson sqlite3 libcurl rdkafka libmicrohttpd libxml-2.0 libcrypto libsystemd \
        libnl-route-3.0 libnftables
CLI_PKGS := libcurl jansson libvirt

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wformat=2 -Werror
CFLAGS ?= -O2 -g
override CFLAGS += -std=gnu11 $(WARN) -I. -D_GNU_SOURCE -DCA_VERSION=\"$(VERSION)\" -MMD -MP \
          $(shell $(PKG_CONFIG) --cflags $(PKGS))
LDLIBS += $(shell $(PKG_CONFIG) --libs $(PKGS)) -lpthread -lm

ifneq ($(SANITIZE),)
override CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=undefined
override LDFLAGS += -fsanitize=$(SANITIZE)
endif

COMMON_SRC  := $(wildcard common/*.c)
IMGC_SRC    := $(wildcard image-cache/*.c)
SCHED_SRC   := $(wildcard scheduler-client/*.c)
NETPLUG_SRC := $(wildcard net-plug/*.c)
AGENT_SRC   := $(filter-out agent/main.c,$(wildcard agent/*.c agent/*/*.c))
CLI_SRC     := $(filter-out cli/computectl.c,$(wildcard cli/*.c))
LIB_SRC     := $(filter-out $(SKIP_SRC),$(COMMON_SRC) $(IMGC_SRC) $(SCHED_SRC) $(NETPLUG_SRC) $(AGENT_SRC))

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
LIB_OBJ := $(call obj,$(LIB_SRC))
CLI_OBJ := $(call obj,$(CLI_SRC))

UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BINS  := $(patsubst tests/unit/test_%.c,$(BUILD)/tests/unit-%,$(UNIT_SRC))
# C tests against real local services (nginx, Placement, glance, libvirtd + QEMU):
# tests/run.sh runs them after it has set the environment up.
COMP_SRC   := $(wildcard tests/component/test_*.c)
COMP_BINS  := $(patsubst tests/component/test_%.c,$(BUILD)/tests/component-%,$(COMP_SRC))
BENCH_SRC  := $(wildcard tests/bench/*.c)
BENCH_BINS := $(patsubst tests/bench/%.c,$(BUILD)/tests/%,$(BENCH_SRC))
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS  := $(patsubst tests/fuzz/%.c,$(BUILD)/tests/%,$(FUZZ_SRC))
TOOL_SRC   := $(wildcard tests/tools/*.c)
# The net-plug VLAN probe for the test guest's initramfs (tests/integration/
# test_net_vlan_guest_qemu.py) links net-plug; the other tools do not link libca.
PROBE_BIN  := $(BUILD)/tests/netplug_vlan_probe
# The hypervisor layer's live-resize probe (tests/integration/test_hv_live_resize_qemu.py) links libca.
HV_PROBE_BIN := $(BUILD)/tests/hv_resize_probe
TOOL_BINS  := $(filter-out $(PROBE_BIN) $(HV_PROBE_BIN),$(patsubst tests/tools/%.c,$(BUILD)/tests/%,$(TOOL_SRC)))

all: $(BUILD)/compute-agent $(BUILD)/computectl

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libca.a: $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/compute-agent: $(BUILD)/obj/agent/main.o $(BUILD)/libca.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/computectl: $(BUILD)/obj/cli/computectl.o $(CLI_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(shell $(PKG_CONFIG) --libs $(CLI_PKGS))

$(BUILD)/tests/unit-cli: $(BUILD)/obj/tests/unit/test_cli.o $(CLI_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(shell $(PKG_CONFIG) --libs $(CLI_PKGS) cmocka)

$(BUILD)/tests/unit-%: $(BUILD)/obj/tests/unit/test_%.o $(BUILD)/libca.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(shell $(PKG_CONFIG) --libs cmocka)

$(BUILD)/tests/component-%: $(BUILD)/obj/tests/component/test_%.o $(BUILD)/libca.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(shell $(PKG_CONFIG) --libs cmocka)

$(BUILD)/tests/%: $(BUILD)/obj/tests/bench/%.o $(BUILD)/libca.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# computectl's harness links the CLI's objects, not the agent's library.
$(BUILD)/tests/fuzz_cli: $(BUILD)/obj/tests/fuzz/fuzz_cli.o $(CLI_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(shell $(PKG_CONFIG) --libs $(CLI_PKGS))

$(BUILD)/tests/fuzz_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BUILD)/libca.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Standalone test tools (tests/tools/*.c), e.g. mock_kafka: not linked with libca.
$(TOOL_BINS): $(BUILD)/tests/%: $(BUILD)/obj/tests/tools/%.o
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Only the libraries it uses (--as-needed): build-guest.sh copies them into the guest.
$(PROBE_BIN): $(BUILD)/obj/tests/tools/netplug_vlan_probe.o $(BUILD)/libca.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -Wl,--as-needed -o $@ $^ $(LDLIBS)

$(HV_PROBE_BIN): $(BUILD)/obj/tests/tools/hv_resize_probe.o $(BUILD)/libca.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

tests: $(UNIT_BINS) $(COMP_BINS) $(BENCH_BINS) $(FUZZ_BINS) $(TOOL_BINS) $(PROBE_BIN) $(HV_PROBE_BIN)

check: all tests check-graph
	tests/run.sh $(abspath $(BUILD)) $(T)

# The agent layer's modules (each file in agent/, each sub-folder) use each
# other without a cycle: read from the objects' symbols (nm).
check-graph: $(BUILD)/compute-agent
	python3 tests/tools/symgraph.py $(BUILD)/obj/agent

bench: all tests
	tests/bench/run.sh $(abspath $(BUILD))

valgrind: all tests
	VALGRIND=1 tests/run.sh $(abspath $(BUILD)) unit-

install: all
	install -D -m 0755 $(BUILD)/compute-agent $(DESTDIR)$(PREFIX)/sbin/compute-agent
	install -D -m 0755 $(BUILD)/computectl $(DESTDIR)$(PREFIX)/bin/computectl
	install -D -m 0644 etc/compute-agent.conf $(DESTDIR)$(SYSCONFDIR)/compute-agent/compute-agent.conf
	install -D -m 0644 etc/instance-types.conf $(DESTDIR)$(SYSCONFDIR)/compute-agent/instance-types.conf
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	install -D -m 0644 api-spec/openapi.yaml $(DESTDIR)$(DOCDIR)/openapi.yaml
	install -D -m 0644 api-spec/asyncapi.yaml $(DESTDIR)$(DOCDIR)/asyncapi.yaml
	install -D -m 0644 docs/architecture.md $(DESTDIR)$(DOCDIR)/architecture.md
	install -D -m 0644 docs/man/computectl.1 $(DESTDIR)$(MANDIR)/man1/computectl.1
	install -D -m 0644 docs/man/compute-agent.8 $(DESTDIR)$(MANDIR)/man8/compute-agent.8
	install -D -m 0644 completions/computectl.bash $(DESTDIR)$(BASHCOMPDIR)/computectl
	sed 's#@PREFIX@#$(PREFIX)#g; s#@SYSCONFDIR@#$(SYSCONFDIR)#g' etc/compute-agent.service \
	  | install -D -m 0644 /dev/stdin $(DESTDIR)$(UNITDIR)/compute-agent.service

clean:
	rm -rf $(BUILD)

.PHONY: all tests check check-graph bench valgrind install clean
.SECONDARY:

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# libFuzzer builds of tests/fuzz/ (clang): make fuzz; run build-fuzz/tests/fuzz_NAME tests/fuzz/corpus/NAME
# (tests/fuzz/README.md)
FUZZ_CC ?= clang
fuzz:
	$(MAKE) BUILD=build-fuzz CC=$(FUZZ_CC) SKIP_SRC="$(SKIP_SRC)" \
	  CFLAGS="-O1 -g -fsanitize=fuzzer-no-link,address,undefined -DFUZZING_ENGINE" \
	  LDFLAGS="-fsanitize=fuzzer,address,undefined" $(patsubst $(BUILD)/%,build-fuzz/%,$(FUZZ_BINS))
.PHONY: fuzz
