# PTCE platform — build, run and test the three services on a real PostgreSQL and Kafka.
#   make run    install what is missing, build, start the whole stack (Ctrl-C stops it)
#   make test   the same set-up on a throwaway state folder, then every test
#   make lint / make bench / make clean

CC      ?= cc
BUILD   ?= build
# SANITIZE=1 builds with AddressSanitizer and UndefinedBehaviorSanitizer (make test does).
SANITIZE ?= 0

PKGS    := libulfius jansson libpq rdkafka libcurl openssl check
CFLAGS  := -std=c17 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -Werror \
           -Wshadow -Wstrict-prototypes -Wformat=2 -g -Icommon -I$(BUILD)/gen \
           $(shell pkg-config --cflags libpq libulfius 2>/dev/null)
LDLIBS  := -lulfius -lmicrohttpd -lorcania -ljansson -lpq -lrdkafka -lcurl -lcrypto -lqpdf -lpthread -lm
# JEMALLOC=1 (the default outside sanitizer builds) links jemalloc, the services' allocator
# (README, "Allocator"); JEMALLOC=0 keeps glibc's.
JEMALLOC ?= 1
ifeq ($(SANITIZE),1)
CFLAGS  += -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
else
CFLAGS  += -O2
ifeq ($(JEMALLOC),1)
LDLIBS  := -ljemalloc $(LDLIBS)
endif
endif

COMMON_SRC := $(wildcard common/*.c)
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/sql_common.o
SERVICES   := submission instruction funding
BINS       := $(SERVICES:%=$(BUILD)/ptce-%) $(BUILD)/ptce-admin

.PHONY: all unit-bins deps run test unit-test system-test lint bench clean stack-stop
all: $(BINS)

deps:
	@deploy/local/deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/gen/%.o: $(BUILD)/gen/%.c
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/gen/sql_common.c: $(wildcard common/sql/*.sql) tools/embed_sql.sh
	@mkdir -p $(dir $@)
	tools/embed_sql.sh sql_common_migrations $(sort $(wildcard common/sql/*.sql)) > $@

$(BUILD)/libptce.a: $(COMMON_OBJ)
	ar rcs $@ $^

# Text files a service carries inside its binary (GraphQL documents, default mapping).
submission_EMBED := $(BUILD)/gen/ds_queries.o $(BUILD)/gen/ds_mapping.o
$(BUILD)/gen/ds_queries.c: services/submission/ds_queries.graphql tools/embed_text.sh
	@mkdir -p $(dir $@)
	tools/embed_text.sh ds_queries_text $< > $@
$(BUILD)/gen/ds_mapping.c: services/submission/ds_mapping.json tools/embed_text.sh
	@mkdir -p $(dir $@)
	tools/embed_text.sh ds_mapping_text $< > $@
instruction_EMBED := $(BUILD)/gen/ds_mutations.o
$(BUILD)/gen/ds_mutations.c: services/instruction/ds_mutations.graphql tools/embed_text.sh
	@mkdir -p $(dir $@)
	tools/embed_text.sh ds_mutations_text $< > $@

# One rule per service: its sources, its embedded migrations, the common library.
define service_rules
$(BUILD)/gen/$(1)_migrations.c: $$(wildcard services/$(1)/migrations/*.sql) tools/embed_sql.sh
	@mkdir -p $$(dir $$@)
	tools/embed_sql.sh $(1)_migrations $$(sort $$(wildcard services/$(1)/migrations/*.sql)) > $$@
$(BUILD)/ptce-$(1): $$(patsubst %.c,$(BUILD)/%.o,$$(wildcard services/$(1)/*.c)) \
                    $(BUILD)/gen/$(1)_migrations.o $$($(1)_EMBED) $(BUILD)/libptce.a
	$(CC) $(LDFLAGS) -o $$@ $$^ $(LDLIBS)
endef
$(foreach s,$(SERVICES),$(eval $(call service_rules,$(s))))

$(BUILD)/ptce-admin: $(BUILD)/tools/ptce_admin.o $(BUILD)/libptce.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# make bench's open-loop load generator (tools/paced_post.c): libc only.
$(BUILD)/paced-post: $(BUILD)/tools/paced_post.o
	$(CC) $(LDFLAGS) -o $@ $^

# Unit tests: one Check binary per common module test, plus the services' domain tests.
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
# A service's domain modules (everything but main.c) are linked into the unit tests too.
DOMAIN_OBJ := $(foreach s,$(SERVICES),$(patsubst %.c,$(BUILD)/%.o,$(filter-out services/$(s)/main.c,$(wildcard services/$(s)/*.c))) $(BUILD)/gen/$(s)_migrations.o $($(s)_EMBED))
# The tests' shared PostgreSQL scaffolding (tests/unit/testdb.c): compiled once, linked into each.
$(BUILD)/tests/testdb.o: tests/unit/testdb.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@
$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/tests/testdb.o $(DOMAIN_OBJ) $(BUILD)/libptce.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iservices $(LDFLAGS) -o $@ $^ $(LDLIBS) $(shell pkg-config --libs check)

unit-bins: $(UNIT_BINS)

# The build runs in a make of its own, started once deps has installed the packages: this one
# read pkg-config's flags before they were there (on a fresh machine, none at all).
run: deps
	@$(MAKE) --no-print-directory all
	@deploy/local/run.sh

test: deps
	@$(MAKE) --no-print-directory SANITIZE=1 BUILD=build/san all unit-bins
	@tests/run.sh build/san

lint: deps
	@tools/lint.sh

bench: deps
	@$(MAKE) --no-print-directory all $(BUILD)/paced-post
	@tests/bench/bench.sh $(BUILD)

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
