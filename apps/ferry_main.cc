// ferry — user-space transport accelerator for QEMU live migration. Entry point: dispatches
// to the subcommands in commands.h and prints what this build contains.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iterator>

#include "apps/build_info.h"
#include "apps/commands.h"
#include "common/log.h"

namespace {

using ferry::apps::Command;

constexpr Command kCommands[] = {
    {"inspect", "parse a captured QEMU migration stream: summary, JSON, rebuild",
     ferry::apps::run_inspect},
    {"send", "source side: carry a QEMU migration to ferry recv, pages encoded",
     ferry::apps::run_send},
    {"recv", "destination side: accept ferry send and feed the destination QEMU",
     ferry::apps::run_recv},
    {"migrate", "one command: prepare both QEMUs, migrate through ferry, adapt, report",
     ferry::apps::run_migrate},
};

void usage(FILE* out) {
  std::fprintf(out,
               "usage: ferry <command> [options]   (ferry <command> --help for details)\n\n"
               "ferry carries QEMU live migrations over a faster, leaner path: unmodified QEMU\n"
               "migrates into ferry send, which drops and encodes pages and ships them to\n"
               "ferry recv, which rebuilds a valid stream for the destination QEMU.\n"
               "Every channel (main, multifd), pre-copy and post-copy, with the return path.\n"
               "\ncommands:\n");
  for (const auto& c : kCommands) std::fprintf(out, "  %-9s %s\n", c.name, c.summary);
  std::fprintf(out, "\n  --version  print the version and what this build contains\n");
}

}  // namespace

int main(int argc, char** argv) {
  // Peers and QEMU may close sockets and pipes at any time; that is an error to report from
  // the failing write, not a reason to die silently.
  std::signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char* name = argv[1];
  if (std::strcmp(name, "--help") == 0 || std::strcmp(name, "-h") == 0 ||
      std::strcmp(name, "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (std::strcmp(name, "--version") == 0) {
    ferry::apps::print_build_info(stdout);
    return 0;
  }
  for (const auto& c : kCommands) {
    if (std::strcmp(name, c.name) == 0) {
      ferry::log::set_program(c.name);
      return c.run(argc - 1, argv + 1);
    }
  }
  std::fprintf(stderr, "ferry: unknown command '%s'; run 'ferry --help' for the list\n", name);
  return 2;
}
