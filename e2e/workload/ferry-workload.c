/*
 * ferry-workload: the workload for migration tests and benchmarks. It holds a given amount of anonymous
 * memory, rewrites part of it at a given rate, and counts ticks. Everything a test needs to judge a
 * checkpoint, restore or migration is in files it rewrites every tick:
 *
 *   DIR/count    the tick counter, kept only in memory: after a restore it must continue, never restart
 *   DIR/maxgap   the longest time between two ticks, in ms: the downtime as the workload itself saw it
 *   DIR/stats    one line of JSON with both and the rest of the figures
 *
 * --verify keeps a checksum of every page (in memory too) and re-reads 1% of the pages each tick against
 * them: a page that comes back from a migration with other contents (a lazily loaded page never filled,
 * a page from the wrong image) is counted in corruptPages, and verifiedPasses counts whole passes.
 *
 * --grow-mib G reserves G MiB more and touches one more page of it each tick until all of it is in: a heap
 * that grows, so that memory appears between pre-copy rounds (grownMib says how far it got).
 *
 * Static, single-threaded, and with no file open between ticks, so that CRIU has nothing to dump but
 * memory, registers and the stdio it was started with.
 *
 *   ferry-workload [--rss-mib N] [--dirty-mib-per-s R] [--working-set-mib W] [--tick-ms T] [--grow-mib G] [--verify] [--out DIR]
 *
 * Build: gcc -O2 -static -o ferry-workload ferry-workload.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_MS 1000000LL
#define NS_PER_S 1000000000LL
#define MIB (1024UL * 1024UL)

struct options {
  long rss_mib;
  double dirty_mib_per_s;
  long working_set_mib; /* -1: all of rss_mib */
  long tick_ms;
  long grow_mib;
  int verify;
  const char *out;
};

/*
 * Every time here is CLOCK_REALTIME, on purpose: CLOCK_MONOTONIC does not see most of a restore's
 * downtime. CRIU reads the clocks during every dump, also of a tree in the host's time namespace
 * (cr-dump.c writes timens-0.img then), and restores the tree into a new time namespace whose offsets
 * make CLOCK_MONOTONIC and CLOCK_BOOTTIME resume at the values read (criu/timens.c). So a runc 1.1
 * container, which has no time namespace of its own, has one after `runc restore`, and everything
 * between that reading and the restore (for a migration: the transfer) is gone from its monotonic
 * clock. Measured with CRIU 4.1.1: a dump and a restore 2 s later showed a gap of 2062 ms on
 * CLOCK_REALTIME and 15 ms on CLOCK_MONOTONIC. CLOCK_REALTIME is also the one clock that means the same
 * on two hosts (NTP keeps them within milliseconds). The price: a step of the system clock shows up as
 * a gap, and a step back is clamped to a gap of 0.
 */
static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

/* xorshift64*: cheap, never all-zero, and far from page-periodic, so no page of ours is a zero page
 * that CRIU can leave out, and no two pages are alike. */
static uint64_t rng_state;
static inline uint64_t rng_next(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1DULL;
}

/* --fill compressible keeps the low 16 bits of each word: like arrays of small integers, it compresses
 * about 4:1, where random words (the default) do not compress at all. */
static uint64_t fill_mask = ~0ULL;

/* Returns the page's checksum (words mixed with their position, so moved words do not cancel out). */
static uint64_t fill_page(uint64_t *page, size_t words) {
  uint64_t sum = 0;
  for (size_t i = 0; i < words; i++) {
    page[i] = rng_next() & fill_mask;
    sum = (sum ^ page[i]) * 0x100000001B3ULL + i;
  }
  return sum;
}

static uint64_t page_sum(const uint64_t *page, size_t words) {
  uint64_t sum = 0;
  for (size_t i = 0; i < words; i++) sum = (sum ^ page[i]) * 0x100000001B3ULL + i;
  return sum;
}

/*
 * Writes DIR/NAME through DIR/.NAME.tmp and a rename, so that a reader (often `runc exec cat`) sees the
 * old file or the new one, never a truncated one. The descriptor is closed before the rename: between
 * ticks nothing is open. A CRIU freeze can land anywhere in here; the temporary file exists on disk,
 * so CRIU can dump and reopen the descriptor, and the next tick overwrites it anyway.
 */
static int write_atomic(const char *dir, const char *name, const char *buf, size_t len) {
  char tmp[PATH_MAX], dst[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name) >= (int)sizeof tmp) return errno = ENAMETOOLONG, -1;
  if (snprintf(dst, sizeof dst, "%s/%s", dir, name) >= (int)sizeof dst) return errno = ENAMETOOLONG, -1;
  int fd;
  do fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return -1;
  for (size_t off = 0; off < len;) {
    ssize_t n = write(fd, buf + off, len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int saved = errno;
      close(fd);
      return errno = saved, -1;
    }
    off += (size_t)n;
  }
  /* Linux releases the descriptor even when close reports EINTR; retrying could close someone else's. */
  if (close(fd) < 0 && errno != EINTR) return -1;
  while (rename(tmp, dst) < 0)
    if (errno != EINTR) return -1;
  return 0;
}

/*
 * Sleeps until `deadline` on the realtime clock, but never longer than one tick per sleep: a clock that
 * steps back, or a restore onto a host whose clock is behind, must not stall the loop. An interrupted
 * sleep is simply recomputed; CRIU turns a sleep it interrupted into EINTR on restore, since the
 * kernel's restart block cannot be restored.
 */
static void sleep_until(int64_t deadline, int64_t tick_ns) {
  for (;;) {
    int64_t left = deadline - now_ns();
    if (left <= 0) return;
    if (left > tick_ns) left = tick_ns;
    struct timespec ts = {.tv_sec = left / NS_PER_S, .tv_nsec = left % NS_PER_S};
    if (nanosleep(&ts, NULL) == 0 || errno != EINTR) return;
  }
}

static void usage(FILE *to) {
  fputs(
      "usage: ferry-workload [--rss-mib N] [--dirty-mib-per-s R] [--working-set-mib W] [--tick-ms T] [--out DIR]\n"
      "  --rss-mib N           allocate and fill N MiB of anonymous memory (default 0)\n"
      "  --dirty-mib-per-s R   rewrite R MiB of it per second, page by page, round-robin (default 0: never)\n"
      "  --working-set-mib W   rewrite only the first W MiB (default: all N)\n"
      "  --tick-ms T           tick every T ms (default 10)\n"
      "  --fill KIND           random (default) or compressible (small integers)\n"
      "  --grow-mib G          reserve G MiB more and touch one more page of it per tick\n"
      "  --verify              check 1%% of the pages per tick against their checksums (corruptPages)\n"
      "  --out DIR             write DIR/count, DIR/maxgap, DIR/stats every tick (default /tmp)\n",
      to);
}

static long parse_long(const char *flag, const char *s, long min, long max) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < min || v > max) {
    fprintf(stderr, "ferry-workload: %s wants an integer from %ld to %ld, got '%s'\n", flag, min, max, s);
    exit(2);
  }
  return v;
}

static double parse_rate(const char *flag, const char *s) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v >= 0 && v <= 1e6)) {
    fprintf(stderr, "ferry-workload: %s wants a number from 0 to 1e6, got '%s'\n", flag, s);
    exit(2);
  }
  return v;
}

static struct options parse_options(int argc, char **argv) {
  struct options o = {.rss_mib = 0, .dirty_mib_per_s = 0, .working_set_mib = -1, .tick_ms = 10, .out = "/tmp"};
  static const struct option longopts[] = {
      {"rss-mib", required_argument, NULL, 'r'},
      {"dirty-mib-per-s", required_argument, NULL, 'd'},
      {"working-set-mib", required_argument, NULL, 'w'},
      {"tick-ms", required_argument, NULL, 't'},
      {"fill", required_argument, NULL, 'f'},
      {"verify", no_argument, NULL, 'v'},
      {"grow-mib", required_argument, NULL, 'g'},
      {"out", required_argument, NULL, 'o'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  int c;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (c) {
    case 'r': o.rss_mib = parse_long("--rss-mib", optarg, 0, 1L << 20); break;
    case 'd': o.dirty_mib_per_s = parse_rate("--dirty-mib-per-s", optarg); break;
    case 'w': o.working_set_mib = parse_long("--working-set-mib", optarg, 0, 1L << 20); break;
    case 't': o.tick_ms = parse_long("--tick-ms", optarg, 1, 60000); break;
    case 'o': o.out = optarg; break;
    case 'v': o.verify = 1; break;
    case 'g': o.grow_mib = parse_long("--grow-mib", optarg, 0, 1L << 20); break;
    case 'f':
      if (strcmp(optarg, "compressible") == 0) fill_mask = 0xffff;
      else if (strcmp(optarg, "random") != 0) {
        fprintf(stderr, "ferry-workload: --fill wants random or compressible, got '%s'\n", optarg);
        exit(2);
      }
      break;
    case 'h': usage(stdout); exit(0);
    default: usage(stderr); exit(2);
    }
  }
  if (optind < argc) {
    fprintf(stderr, "ferry-workload: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    exit(2);
  }
  if (o.working_set_mib < 0) o.working_set_mib = o.rss_mib;
  if (o.working_set_mib > o.rss_mib) {
    fprintf(stderr, "ferry-workload: --working-set-mib %ld exceeds --rss-mib %ld\n", o.working_set_mib, o.rss_mib);
    exit(2);
  }
  if (o.dirty_mib_per_s > 0 && o.working_set_mib == 0) {
    fprintf(stderr, "ferry-workload: --dirty-mib-per-s needs memory to dirty (--rss-mib, --working-set-mib > 0)\n");
    exit(2);
  }
  return o;
}

int main(int argc, char **argv) {
  struct options o = parse_options(argc, argv);
  /* A reader that goes away must not kill the workload through the ready line. */
  signal(SIGPIPE, SIG_IGN);

  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  const size_t words = page / sizeof(uint64_t);
  const size_t total_pages = (size_t)o.rss_mib * MIB / page;
  const size_t ws_pages = (size_t)o.working_set_mib * MIB / page;
  /* Pages reserved: the first total_pages are touched at start, the rest one per tick (--grow-mib). */
  const size_t reserved_pages = total_pages + (size_t)o.grow_mib * MIB / page;
  size_t filled_pages = total_pages;
  rng_state = ((uint64_t)now_ns() ^ ((uint64_t)getpid() << 32)) | 1;

  unsigned char *mem = NULL;
  uint64_t *sums = NULL;
  if (o.verify && reserved_pages > 0) {
    sums = mmap(NULL, reserved_pages * sizeof *sums, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sums == MAP_FAILED) {
      perror("ferry-workload: mmap");
      return 1;
    }
  }
  if (reserved_pages > 0) {
    mem = mmap(NULL, reserved_pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
      perror("ferry-workload: mmap");
      return 1;
    }
    /* Transparent huge pages are "always" on these hosts: one write would then dirty 2 MiB for
     * soft-dirty tracking and CRIU's pre-dump, and the dirty rate would not be the one asked for. */
    madvise(mem, reserved_pages * page, MADV_NOHUGEPAGE);
    for (size_t p = 0; p < total_pages; p++) {
      uint64_t sum = fill_page((uint64_t *)(mem + p * page), words);
      if (sums) sums[p] = sum;
    }
  }
  size_t verify_cursor = 0;
  uint64_t verified_passes = 0, corrupt_pages = 0;

  const int64_t tick_ns = o.tick_ms * NS_PER_MS;
  /* Pages are owed by time elapsed, not per tick: ticks that run late (measured: a busy 2-vCPU host
   * lost up to 16% of them) would otherwise lower the rate. Pages owed are fractional (8 MiB/s is 20.48
   * pages per 10 ms); the remainder carries over, so the long-run rate is exact. The backlog is capped:
   * after a freeze or a restore the workload must not rewrite the whole downtime's worth at once. */
  const double pages_per_ns = o.dirty_mib_per_s * (double)MIB / (double)page / (double)NS_PER_S;
  const int64_t backlog_cap = 2 * tick_ns > 100 * NS_PER_MS ? 2 * tick_ns : 100 * NS_PER_MS;
  double owed = 0;
  size_t cursor = 0;
  uint64_t dirtied_pages = 0;

  uint64_t count = 0, ticks = 0, late_ticks = 0;
  int64_t max_gap = 0, last_gap = 0;
  int64_t prev = now_ns(), next = prev;
  char buf[512];

  for (;;) {
    /* Timestamp first, before any work: whatever froze the process (SIGSTOP, CRIU's freezer, a whole
     * migration) lies between `prev` and here, so the first tick after a restore measures the freeze. */
    int64_t now = now_ns();
    if (count > 0) {
      last_gap = now - prev;
      if (last_gap < 0) last_gap = 0;
      if (last_gap > max_gap) max_gap = last_gap;
      if (last_gap > 2 * tick_ns) late_ticks++;
      ticks++;
    }
    prev = now;
    count++;

    if (pages_per_ns > 0) {
      owed += pages_per_ns * (double)(last_gap < backlog_cap ? last_gap : backlog_cap);
      size_t n = (size_t)owed;
      owed -= (double)n;
      for (size_t i = 0; i < n; i++) {
        uint64_t sum = fill_page((uint64_t *)(mem + cursor * page), words);
        if (sums) sums[cursor] = sum;
        if (++cursor == ws_pages) cursor = 0;
      }
      dirtied_pages += n;
    }
    if (filled_pages < reserved_pages) {
      uint64_t sum = fill_page((uint64_t *)(mem + filled_pages * page), words);
      if (sums) sums[filled_pages] = sum;
      filled_pages++;
    }
    const size_t verify_per_tick = sums ? (filled_pages + 99) / 100 : 0;
    for (size_t i = 0; i < verify_per_tick; i++) {
      if (page_sum((const uint64_t *)(mem + verify_cursor * page), words) != sums[verify_cursor]) corrupt_pages++;
      if (++verify_cursor == filled_pages) {
        verify_cursor = 0;
        verified_passes++;
      }
    }

    int len = snprintf(buf, sizeof buf, "%" PRIu64 "\n", count);
    if (write_atomic(o.out, "count", buf, (size_t)len) < 0) goto write_failed;
    len = snprintf(buf, sizeof buf, "%.3f\n", (double)max_gap / NS_PER_MS);
    if (write_atomic(o.out, "maxgap", buf, (size_t)len) < 0) goto write_failed;
    len = snprintf(buf, sizeof buf,
                   "{\"count\":%" PRIu64 ",\"maxGapMs\":%.3f,\"lastGapMs\":%.3f,\"rssMib\":%ld,\"dirtyMibPerS\":%g,"
                   "\"workingSetMib\":%ld,\"tickMs\":%ld,\"ticks\":%" PRIu64 ",\"lateTicks\":%" PRIu64 ",\"dirtiedMib\":%.3f,"
                   "\"nowMs\":%.3f,\"verifiedPasses\":%" PRIu64 ",\"corruptPages\":%" PRIu64 ",\"grownMib\":%.3f}\n",
                   count, (double)max_gap / NS_PER_MS, (double)last_gap / NS_PER_MS, o.rss_mib, o.dirty_mib_per_s,
                   o.working_set_mib, o.tick_ms, ticks, late_ticks, (double)dirtied_pages * (double)page / (double)MIB,
                   (double)now / NS_PER_MS, verified_passes, corrupt_pages,
                   (double)(filled_pages - total_pages) * (double)page / (double)MIB);
    if (write_atomic(o.out, "stats", buf, (size_t)len) < 0) goto write_failed;

    if (count == 1) {
      /* Only now, with the memory touched and the files in place, can a reader rely on either. */
      printf("ready rss=%ld MiB\n", o.rss_mib);
      fflush(stdout);
    }

    /* A late tick (a freeze, a restore, a slow disk) starts a new schedule rather than firing the
     * missed ticks back to back, which would burst the dirty rate right after a restore. */
    next += tick_ns;
    if (next <= now) next = now + tick_ns;
    sleep_until(next, tick_ns);
  }

write_failed:
  fprintf(stderr, "ferry-workload: cannot write to %s: %s\n", o.out, strerror(errno));
  return 1;
}
