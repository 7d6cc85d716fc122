// apps/commands.h — the `ferry` subcommands. Each lives in its own cmd_<name>.cc and takes
// argv after the subcommand name; it returns the process exit status. migrate (issue 6)
// joins this list when it lands.
#pragma once

namespace ferry::apps {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(int argc, char** argv);
};

int run_inspect(int argc, char** argv);
int run_send(int argc, char** argv);
int run_recv(int argc, char** argv);
int run_migrate(int argc, char** argv);

// ferry inspect --simulate-codec (inspect_simulate.cc): exit status as run_inspect.
int simulate_codecs(const char* path, bool json, size_t cache_bytes);
// ferry inspect --superseded (inspect_superseded.cc): exit status as run_inspect.
int superseded_pages(const char* path, bool json);

}  // namespace ferry::apps
