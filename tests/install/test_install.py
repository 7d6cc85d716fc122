#!/usr/bin/env python3
"""What `meson install` gives operators, checked in a DESTDIR (issue 20).

    test_install.py layout      every file installed, and nothing else; the installed ferry runs
    test_install.py manpages    a page per command, every flag of its --help in it, no groff
                                warnings, man -w finds them, regenerating gives the same bytes
    test_install.py completion  bash-completion's loader finds it; commands, flags, values
    test_install.py service     ferry-recv.service passes `systemd-analyze verify` (which must
                                also catch a bad directive and a missing binary), its settings

Needs FERRY_BUILD_DIR (set by meson) and the build done; installs with --no-rebuild.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

BUILD = os.environ.get("FERRY_BUILD_DIR", "build")
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def build_options():
    out = subprocess.run(["meson", "introspect", "--buildoptions", BUILD], check=True,
                         capture_output=True, text=True).stdout
    return {o["name"]: o["value"] for o in json.loads(out)}


class Install:
    """A `meson install` into a fresh DESTDIR; paths of the configured prefix inside it."""

    def __init__(self, tmp):
        self.destdir = os.path.join(tmp, "dest")
        r = subprocess.run(["meson", "install", "-C", BUILD, "--no-rebuild", "--quiet",
                            "--destdir", self.destdir], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"meson install failed:\n{r.stdout}{r.stderr}")
        o = build_options()
        self.prefix = o["prefix"]
        self.bindir = os.path.join(o["prefix"], o["bindir"])
        self.mandir = os.path.join(o["prefix"], o["mandir"])
        self.datadir = os.path.join(o["prefix"], o["datadir"])
        self.sysconfdir = os.path.join(o["prefix"], o["sysconfdir"])

    def at(self, path):
        """The DESTDIR copy of an absolute installed path."""
        return self.destdir + path

    def ferry(self, *args):
        return subprocess.run([self.at(self.bindir + "/ferry"), *args], check=True,
                              capture_output=True, text=True).stdout

    def files(self):
        found = set()
        for root, _, names in os.walk(self.destdir):
            for n in names:
                found.add(os.path.join(root, n)[len(self.destdir):])
        return found


def commands(help_text):
    """The commands `ferry --help` lists."""
    table = help_text.split("\ncommands:\n", 1)[1]
    return re.findall(r"^  ([a-z][a-z0-9-]*)  ", table, re.M)


def help_flags(help_text):
    """Flags a --help names: in its usage lines and at the head of its option lines."""
    lines = help_text.split("\n")
    usage = [lines[0]]
    for line in lines[1:]:
        if not line.startswith(" ") or not line.strip():
            break
        usage.append(line)
    flags = set(re.findall(r"--[a-z][a-z0-9-]*", " ".join(usage)))
    for line in lines:
        m = re.match(r"^  (-[-a-z0-9]+(?:, -[-a-z0-9]+)*)", line)
        if m:
            flags |= {f for f in m.group(1).split(", ") if f.startswith("--")}
    return flags


def unit_path(inst):
    units = [f for f in inst.files() if f.endswith("/ferry-recv.service")]
    if len(units) != 1:
        fail(f"expected one ferry-recv.service, installed: {units}")
    return units[0]


def test_layout(tmp):
    inst = Install(tmp)
    cmds = commands(inst.ferry("--help"))
    version = inst.ferry("--version").split("\n")[0]
    print(f"installed ferry: {version}; commands: {' '.join(cmds)}")
    if not cmds:
        fail("ferry --help lists no commands")
    docs = sorted(f for f in os.listdir(os.path.join(SRC, "docs")) if f.endswith(".md"))
    expected = {inst.bindir + "/ferry",
                inst.datadir + "/bash-completion/completions/ferry",
                inst.sysconfdir + "/default/ferry-recv",
                inst.mandir + "/man1/ferry.1"}
    expected |= {f"{inst.mandir}/man1/ferry-{c}.1" for c in cmds}
    expected |= {f"{inst.datadir}/doc/ferry/{d}" for d in ["README.md", "LICENSE"] + docs}
    got = inst.files()
    unit = unit_path(inst)
    if not re.search(r"/lib/systemd/system/ferry-recv\.service$", unit):
        fail(f"the unit is not in a systemd unit directory: {unit}")
    expected.add(unit)
    for f in sorted(got):
        print(f"  {f}")
    if got != expected:
        fail(f"missing: {sorted(expected - got)}; not expected: {sorted(got - expected)}")
    if not os.access(inst.at(inst.bindir + "/ferry"), os.X_OK):
        fail("bin/ferry is not executable")
    with open(inst.at(f"{inst.datadir}/doc/ferry/LICENSE")) as f:
        if "Apache License" not in f.read(200):
            fail("LICENSE is not the Apache License text")
    print(f"layout: {len(got)} files, as expected")


def test_manpages(tmp):
    inst = Install(tmp)
    man1 = inst.at(inst.mandir + "/man1")
    top_help = inst.ferry("--help")
    pages = {"ferry": (top_help, man1 + "/ferry.1")}
    for c in commands(top_help):
        pages[f"ferry-{c}"] = (inst.ferry(c, "--help"), f"{man1}/ferry-{c}.1")
    env = dict(os.environ, MANPATH=inst.at(inst.mandir))
    for name, (help_text, path) in pages.items():
        if not os.path.isfile(path):
            fail(f"{name}: no man page at {path}")
        with open(path) as f:
            src = f.read()
        missing = [f for f in sorted(help_flags(help_text))
                   if "\\fB" + f.replace("-", "\\-") + "\\fR" not in src]
        if missing:
            fail(f"{name}(1) lacks flags its --help has: {missing}")
        r = subprocess.run(["groff", "-t", "-man", "-Tutf8", "-ww", "-z", path],
                           capture_output=True, text=True)
        if r.returncode != 0 or r.stderr:
            fail(f"{name}(1): groff warns: {r.stderr}")
        r = subprocess.run(["man", "-w", name], env=env, capture_output=True, text=True)
        if r.returncode != 0 or r.stdout.strip() != path:
            fail(f"man -w {name} with MANPATH at the install: {r.stdout}{r.stderr}")
        print(f"{name}(1): {len(help_flags(help_text))} flags, renders clean")
    # The pages are made from the binary at build time; the installed ones must be what the
    # installed binary's help gives now.
    regen = os.path.join(tmp, "regen")
    os.mkdir(regen)
    subprocess.run([sys.executable, os.path.join(SRC, "packaging/gen_docs.py"), "man", "--ferry",
                    inst.at(inst.bindir + "/ferry"), "--outdir", regen,
                    *commands(top_help)], check=True)
    for name, (_, path) in pages.items():
        with open(path) as a, open(f"{regen}/{name}.1") as b:
            if a.read() != b.read():
                fail(f"{name}(1) differs from the one its --help makes now")
    # A command the build does not name (or one it names that ferry lacks) fails the build
    # rather than leave a page out.
    for names in (commands(top_help)[1:], commands(top_help) + ["nosuch"]):
        r = subprocess.run([sys.executable, os.path.join(SRC, "packaging/gen_docs.py"), "man",
                            "--ferry", inst.at(inst.bindir + "/ferry"), "--outdir", regen,
                            *names], capture_output=True, text=True)
        if r.returncode == 0 or "update ferry_commands" not in r.stderr:
            fail(f"gen_docs.py accepted the command list {names}: {r.stderr}")
    print(f"manpages: {len(pages)} pages, each current; a command list that differs fails")


COMPLETE = r"""
set -u
source /usr/share/bash-completion/bash_completion
__load_completion ferry || { echo "loader: no completion for ferry"; exit 1; }
complete -p ferry
# complete LINE: what TAB offers at the end of LINE, one per line.
complete_line() {
  COMP_LINE=$1
  COMP_POINT=${#COMP_LINE}
  read -ra COMP_WORDS <<<"$COMP_LINE"
  [[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")
  COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
  COMPREPLY=()
  _ferry ferry "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
  printf '%s\n' "${COMPREPLY[@]}" | sort
}
"""


def complete(inst, line, cwd):
    script = COMPLETE + f"complete_line {json.dumps(line)}\n"
    env = dict(os.environ, XDG_DATA_DIRS=inst.at(inst.datadir), HOME=cwd)
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], cwd=cwd, env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"bash completion for {line!r} failed: {r.stdout}{r.stderr}")
    lines = r.stdout.split("\n")
    if lines[0] != "complete -F _ferry ferry":
        fail(f"the loader registered {lines[0]!r}")
    return [w for w in lines[1:] if w]


def expect(inst, line, want, cwd):
    got = complete(inst, line, cwd)
    if got != sorted(want):
        fail(f"{line!r}<TAB>: got {got}, want {sorted(want)}")
    print(f"{line!r}<TAB> -> {' '.join(got) if len(got) < 8 else f'{len(got)} words'}")


def test_completion(tmp):
    inst = Install(tmp)
    cwd = os.path.join(tmp, "cwd")
    os.makedirs(cwd + "/x509dir")
    open(cwd + "/x509file", "w").close()
    open(cwd + "/stream.bin", "w").close()
    cmds = commands(inst.ferry("--help"))
    expect(inst, "ferry ", cmds + ["--help", "--version"], cwd)
    expect(inst, "ferry re", ["recv"], cwd)
    for c in cmds:
        expect(inst, f"ferry {c} --", help_flags(inst.ferry(c, "--help")) | {"--help"}, cwd)
    expect(inst, "ferry send --codec ", ["none", "fast", "max", "auto"], cwd)
    expect(inst, "ferry send --codec f", ["fast"], cwd)
    expect(inst, "ferry recv --poll ", ["adaptive", "busy"], cwd)
    expect(inst, "ferry migrate --al", ["--allow-postcopy", "--allow-throttle"], cwd)
    expect(inst, "ferry recv --tls-x509-dir x509", ["x509dir"], cwd)  # directories only
    expect(inst, "ferry send --tls-psk-file x509", ["x509dir", "x509file"], cwd)
    expect(inst, "ferry recv --listen ", [], cwd)  # an address to type, not a flag
    expect(inst, "ferry inspect --json st", ["stream.bin"], cwd)
    expect(inst, "ferry nosuch --", [], cwd)
    print("completion: loads through bash-completion's loader and completes as --help says")


SETTING_RE = re.compile(r'^([A-Z_][A-Z0-9_]*)=("[^"]*"|[^"\s]*)$')


def test_service(tmp):
    inst = Install(tmp)
    unit = unit_path(inst)
    with open(inst.at(unit)) as f:
        text = f.read()
    settings_path = inst.sysconfdir + "/default/ferry-recv"
    exec_start = re.search(r"^ExecStart=(\S+) (.*)$", text, re.M)
    env_file = re.search(r"^EnvironmentFile=(.*)$", text, re.M)
    if not exec_start or exec_start.group(1) != inst.bindir + "/ferry":
        fail(f"ExecStart does not run {inst.bindir}/ferry: {exec_start and exec_start.group(0)}")
    if not exec_start.group(2).startswith("recv --serve "):
        fail(f"ExecStart does not run ferry recv --serve: {exec_start.group(0)}")
    if not env_file or env_file.group(1) != settings_path:
        fail(f"EnvironmentFile is not {settings_path}: {env_file and env_file.group(0)}")
    if "Type=notify\n" not in text:
        fail("the unit is not Type=notify")
    # Every flag the unit passes is one ferry recv knows (its --help lists it).
    recv_help = subprocess.run([inst.at(inst.bindir + "/ferry"), "recv", "--help"],
                               capture_output=True, text=True, check=True).stdout
    unknown = [f for f in re.findall(r"(?<!\S)--[a-z][a-z-]*", exec_start.group(2))
               if not re.search(r"(?m)^\s+" + re.escape(f) + r"\b", recv_help)]
    if unknown:
        fail(f"ExecStart passes flags ferry recv --help does not list: {unknown}")

    # The settings: NAME=value lines systemd reads, defining every variable ExecStart uses.
    defined = {}
    with open(inst.at(settings_path)) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            m = SETTING_RE.match(line)
            if not m:
                fail(f"{settings_path}:{n}: not NAME=value: {line!r}")
            defined[m.group(1)] = m.group(2).strip('"')
    used = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", exec_start.group(2)))
    if used - set(defined):
        fail(f"ExecStart uses {sorted(used - set(defined))}, not set in {settings_path}")
    if not defined.get("FERRY_LISTEN") or not defined.get("FERRY_SECURITY"):
        fail("the settings give no listen address or no credentials")
    # The default QEMU directory is the one the unit makes and keeps writable.
    runtime = re.search(r"^RuntimeDirectory=(.*)$", text, re.M)
    if not runtime or defined.get("FERRY_QEMU_DIR") not in [
            "/run/" + d for d in runtime.group(1).split()]:
        fail(f"FERRY_QEMU_DIR={defined.get('FERRY_QEMU_DIR')} is not a RuntimeDirectory= "
             f"of the unit ({runtime and runtime.group(0)})")
    print(f"settings: {', '.join(f'{k}={v!r}' for k, v in defined.items())}")

    # systemd-analyze verify on the installed unit, its paths moved into the DESTDIR: the
    # binary must exist there and be executable, Documentation= man pages must be installed.
    checkdir = os.path.join(tmp, "verify")
    os.mkdir(checkdir)

    def verify(unit_text, what):
        path = os.path.join(checkdir, "ferry-recv.service")
        with open(path, "w") as f:
            f.write(unit_text)
        env = dict(os.environ, MANPATH=inst.at(inst.mandir), SYSTEMD_LOG_COLOR="0")
        r = subprocess.run(["systemd-analyze", "verify", "--man=yes", path], env=env,
                           capture_output=True, text=True)
        out = (r.stdout + r.stderr).strip()
        print(f"systemd-analyze verify ({what}): exit {r.returncode}"
              + (f"\n    {out}" if out else ", no messages"))
        # verify exits 0 on an unknown key or a bad value and only prints them: both count.
        return r.returncode == 0 and not out

    moved = text.replace(f"ExecStart={inst.bindir}/", f"ExecStart={inst.at(inst.bindir)}/")
    moved = moved.replace(f"EnvironmentFile={settings_path}",
                          f"EnvironmentFile={inst.at(settings_path)}")
    if not verify(moved, "installed unit"):
        fail("systemd-analyze verify rejects ferry-recv.service")
    # The check must be able to fail: a misspelt directive, a bad value, a missing binary.
    bad = {
        "misspelt directive": moved.replace("Restart=on-failure", "Restart=on-failure\nRestat=no"),
        "bad value": moved.replace("Type=notify", "Type=notifyy"),
        "missing binary": moved.replace(f"{inst.at(inst.bindir)}/ferry ",
                                        f"{inst.at(inst.bindir)}/ferry-missing "),
        "missing man page": moved.replace("man:ferry-recv(1)", "man:ferry-nosuch(1)"),
    }
    for what, unit_text in bad.items():
        if unit_text == moved:
            fail(f"could not make the '{what}' variant")
        if verify(unit_text, what):
            fail(f"systemd-analyze verify accepted a unit with a {what}")
    print("service: the unit verifies, and the check catches each broken variant")


def main():
    tests = {"layout": test_layout, "manpages": test_manpages, "completion": test_completion,
             "service": test_service}
    if len(sys.argv) != 2 or sys.argv[1] not in tests:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(tests)}")
    tmp = tempfile.mkdtemp(prefix=f"ferry-install-{sys.argv[1]}-")
    try:
        tests[sys.argv[1]](tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
