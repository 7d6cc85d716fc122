#!/usr/bin/env python3
"""Man pages and bash completion for ferry, made from the help texts of the built binary.

Run at build time (packaging/meson.build), so the installed pages and completion always say
what `ferry --help` and `ferry COMMAND --help` say; nothing here is written by hand.

    gen_docs.py man --ferry BUILD/apps/ferry --outdir DIR inspect send recv migrate
    gen_docs.py completion --ferry BUILD/apps/ferry --out FILE inspect send recv migrate

The commands are named on the command line too (meson must know each output page before
the build): if `ferry --help` lists others, this fails rather than leave one out.

The help texts follow one shape, which this parser relies on:
    usage: ferry CMD ...            (more usage lines indented below it)
    <blank>
    description paragraphs          (indented lines in them are literal, e.g. commands)
    <blank>
    [options:]
      --flag METAVAR   text         (two spaces, a flag; its text goes on indented below)
    <blank>
    trailing paragraphs             ("exit status: ..." becomes EXIT STATUS)
"""
import argparse
import dataclasses
import re
import subprocess
import sys

FLAG_RE = re.compile(r"--?[A-Za-z0-9][A-Za-z0-9-]*")
# A metavar written after a flag: "EAL ARGS" in quotes, unix:PATH, FILE|-, NAME,..., N, or
# a choice list such as adaptive|busy.
METAVAR_RE = re.compile(r'^("[^"]*"|[a-z]+:[A-Z][A-Z:_]*|[A-Z][A-Z0-9_]*(\|-)?(,\.\.\.)?'
                        r"|[a-z][a-z0-9-]*(\|[a-z][a-z0-9-]*)+)$")


@dataclasses.dataclass
class Option:
    flags: list  # e.g. ["-h", "--help"] or ["--codec", "--cache-mib", ...] (a shared entry)
    metavar: str  # "" for a switch
    text: list  # lines, left-stripped, with their extra indentation kept as leading spaces


@dataclasses.dataclass
class Help:
    name: str  # "ferry" or "ferry send"
    usage: list
    description: list  # paragraphs, each a list of raw lines
    options: list
    trailing: list  # paragraphs after the options


def run_help(ferry, command):
    argv = [ferry] + ([command] if command else []) + ["--help"]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    if not out.startswith("usage: "):
        sys.exit(f"gen_docs: '{' '.join(argv[1:])}' does not start with 'usage: '")
    return out


def paragraphs(lines):
    paras, cur = [], []
    for line in lines:
        if line.strip():
            cur.append(line.rstrip())
        elif cur:
            paras.append(cur)
            cur = []
    if cur:
        paras.append(cur)
    return paras


def is_option_line(line):
    return re.match(r"^  -", line) is not None


def split_option_head(line):
    """'  --listen unix:PATH     text' -> (flags, metavar, text, text column)."""
    body = line[2:]
    flags = []
    pos = 0
    # One flag, or several separated by ", " (-h, --help / --codec, --cache-mib, ...).
    while True:
        m = FLAG_RE.match(body, pos)
        if not m:
            break
        flags.append(m.group(0))
        pos = m.end()
        if body.startswith(", ", pos) and FLAG_RE.match(body, pos + 2):
            pos += 2
            continue
        break
    metavar = ""
    rest = body[pos:]
    if len(flags) == 1 and rest.startswith(" ") and not rest.startswith("  "):
        # A metavar follows after one space; the text starts after two or more, or, when the
        # column is full, after one space and a token that is no metavar.
        m = re.match(r' ("[^"]*"|\S+)', rest)
        if m and METAVAR_RE.match(m.group(1)):
            metavar = m.group(1)
            pos += m.end()
            rest = body[pos:]
    text = rest.strip()
    column = 2 + pos + (len(rest) - len(rest.lstrip()))
    return flags, metavar, text, column


def parse(out, name):
    lines = out.rstrip("\n").split("\n")
    usage = [lines[0][len("usage: "):]]
    i = 1
    while i < len(lines) and lines[i].startswith(" ") and lines[i].strip():
        usage.append(lines[i].strip())
        i += 1
    # Description: up to the first option line (or an "options:"/"commands:" heading).
    desc_lines = []
    while i < len(lines) and not is_option_line(lines[i]) and lines[i] not in ("options:",):
        desc_lines.append(lines[i])
        i += 1
    if i < len(lines) and lines[i] == "options:":
        i += 1
    options = []
    cur = None
    while i < len(lines):
        line = lines[i]
        if is_option_line(line):
            flags, metavar, text, column = split_option_head(line)
            cur = Option(flags, metavar, [text] if text else [])
            cur.column = column
            options.append(cur)
        elif line.startswith(" ") and line.strip() and cur is not None:
            indent = len(line) - len(line.lstrip())
            extra = max(0, indent - cur.column)
            last = cur.text[-1] if cur.text else ""
            last_extra = len(last) - len(last.lstrip())
            if extra > 0 and last_extra > 0 and extra > last_extra:
                # Deeper than the row above it: that row's text wrapping (a table inside
                # an option, e.g. the codec levels).
                cur.text[-1] = last + " " + line.strip()
            else:
                cur.text.append(" " * extra + line.strip())
        elif not line.strip():
            # A blank line ends the options unless another option follows.
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and is_option_line(lines[j]):
                i = j
                continue
            i = j
            break
        else:
            break
        i += 1
    trailing = paragraphs(lines[i:])
    return Help(name, usage, paragraphs(desc_lines), options, trailing)


def top_commands(out):
    """The 'commands:' table of `ferry --help`: [(name, summary)]."""
    cmds, on = [], False
    for line in out.split("\n"):
        if line == "commands:":
            on = True
            continue
        if on:
            m = re.match(r"^  ([a-z][a-z0-9-]*)\s{2,}(.*)$", line)
            if m:
                cmds.append((m.group(1), m.group(2).strip()))
            elif cmds:
                break
    return cmds


def check_commands(ferry, wanted):
    out = run_help(ferry, None)
    listed = top_commands(out)
    names = [c for c, _ in listed]
    if sorted(names) != sorted(wanted):
        sys.exit(f"gen_docs: ferry --help lists commands {names}, the build names {wanted}: "
                 "update ferry_commands in packaging/meson.build")
    return out, listed


# ---- man pages ----


def roff(text):
    """Escapes one line of text for roff."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def bold_flags(text):
    """Marks flags in running text bold, as man pages do."""
    return re.sub(r"(?<![\w-])(\\-\\-[A-Za-z0-9\\-]*[A-Za-z0-9])", r"\\fB\1\\fR", text)


def man_paragraphs(paras):
    out = []
    for para in paras:
        out.append(".PP")
        for line in para:
            if line.startswith(" "):
                # An indented line inside prose is literal (a command to type).
                out += [".RS 2", ".nf", roff(line.strip()), ".fi", ".RE"]
            else:
                out.append(bold_flags(roff(line)))
    return out


def man_option(opt):
    head = ", ".join("\\fB" + roff(f) + "\\fR" for f in opt.flags)
    if opt.metavar:
        head += " \\fI" + roff(opt.metavar) + "\\fR"
    out = [".TP", head]
    in_table = False
    for line in opt.text:
        row = re.match(r"^ +(\S+)  +(.*)$", line)
        if row:
            # A table inside the option (e.g. the codec levels): "name  text" rows.
            if not in_table:
                out.append(".RS")
                in_table = True
            out += [".TP 6", "\\fB" + roff(row.group(1)) + "\\fR",
                    bold_flags(roff(row.group(2)))]
            continue
        if in_table:
            out += [".RE", ".IP"]
            in_table = False
        if line.startswith(" "):
            # Deeper-indented lines without a name column are literal (e.g. JSON keys).
            out += [".br", "\\ \\ " + bold_flags(roff(line.strip()))]
        else:
            out.append(bold_flags(roff(line)))
    if in_table:
        out.append(".RE")
    return out


def man_page(h, title, summary, version, see_also):
    out = [
        f'.\\" Generated from `{h.name} --help` by packaging/gen_docs.py; do not edit.',
        f'.TH {title.upper()} 1 "" "ferry {version}" "User Commands"',
        ".SH NAME",
        f"{roff(title)} \\- {roff(summary)}",
        ".SH SYNOPSIS",
        ".nf",
    ]
    for i, line in enumerate(h.usage):
        out.append(("" if i == 0 else "    ") + bold_flags(roff(line)))
    out += [".fi", ".SH DESCRIPTION"]
    out += man_paragraphs(h.description)
    if h.options:
        out.append(".SH OPTIONS")
        for opt in h.options:
            out += man_option(opt)
    exit_paras = [p for p in h.trailing if p[0].startswith("exit status:")]
    notes = [p for p in h.trailing if not p[0].startswith("exit status:")]
    if notes:
        out.append(".SH NOTES")
        out += man_paragraphs(notes)
    if exit_paras:
        out.append(".SH EXIT STATUS")
        for p in exit_paras:
            p = [p[0][len("exit status:"):].strip()] + p[1:]
            out += man_paragraphs([p])
    out += [".SH SEE ALSO", ",\n".join(f"\\fB{roff(s)}\\fR(1)" for s in see_also)]
    return "\n".join(out) + "\n"


def cmd_man(args):
    top_out, listed = check_commands(args.ferry, args.commands)
    version = subprocess.run([args.ferry, "--version"], check=True, capture_output=True,
                             text=True).stdout.split("\n")[0].split()[-1]
    pages = {}
    top = parse(top_out, "ferry")
    # The top page lists commands as options would be; give them their own section.
    top.description = [p for p in top.description if p[0] != "commands:"]
    sub_names = [f"ferry-{c}" for c, _ in listed]
    text = man_page(top, "ferry", "transport accelerator for QEMU live migration", version,
                    sub_names)
    cmd_section = [".SH COMMANDS"]
    for c, summary in listed:
        cmd_section += [".TP", f"\\fBferry {roff(c)}\\fR", f"{roff(summary)}; see "
                        f"\\fBferry\\-{roff(c)}\\fR(1)."]
    text = text.replace(".SH OPTIONS", "\n".join(cmd_section) + "\n.SH OPTIONS", 1)
    pages["ferry.1"] = text
    for c, summary in listed:
        h = parse(run_help(args.ferry, c), f"ferry {c}")
        see = ["ferry"] + [s for s in sub_names if s != f"ferry-{c}"]
        pages[f"ferry-{c}.1"] = man_page(h, f"ferry-{c}", summary, version, see)
    for name, text in pages.items():
        with open(f"{args.outdir}/{name}", "w") as f:
            f.write(text)


# ---- bash completion ----


def usage_metavars(h):
    """Flags and their metavars as the usage lines write them: {"--poll": "adaptive|busy"}."""
    found = {}
    text = " ".join(h.usage)
    for m in re.finditer(r'(--[a-z0-9-]+)(?: ("[^"]*"|[^\s\[\]()|]+(?:\|[^\s\[\]()|]+)*))?',
                         text):
        flag, meta = m.group(1), m.group(2) or ""
        if meta.startswith("-") or not METAVAR_RE.match(meta):
            meta = ""
        if meta or flag not in found:
            found[flag] = meta
    return found


def positional(h):
    """What a command takes besides flags, from its usage: "file" or ""."""
    text = re.sub(r"\[[^\]]*\]|\([^)]*\)", " ", " ".join(h.usage))
    text = re.sub(r'--[a-z0-9-]+(?: ("[^"]*"|\S+))?', " ", text)
    return "file" if re.search(r"\b(FILE|PATH)\b", text) else ""


def value_kind(meta):
    if not meta:
        return ("switch", "")
    if "|" in meta and not meta.startswith('"') and re.match(r"^[a-z|-]+$", meta):
        return ("words", " ".join(w for w in meta.split("|") if w != "-"))
    if meta.startswith(("FILE", "OUT", "PATH")):
        return ("file", "")
    if meta == "DIR":
        return ("dir", "")
    return ("value", "")  # typed by the user: numbers, addresses, names


def command_flags(h):
    usage = usage_metavars(h)
    flags = {}
    for opt in h.options:
        for f in opt.flags:
            if not f.startswith("--"):
                continue
            # The usage line is the more exact (choices), the option line the fallback.
            meta = usage.get(f) or (opt.metavar if len(opt.flags) == 1 else "")
            flags[f] = value_kind(meta)
    for f, meta in usage.items():
        if f not in flags:
            flags[f] = value_kind(meta)
    return flags


def cmd_completion(args):
    top_out, listed = check_commands(args.ferry, args.commands)
    top = parse(top_out, "ferry")
    top_words = [c for c, _ in listed] + sorted(
        {f for o in top.options for f in o.flags if f.startswith("--")} | {"--help"})
    out = [
        "# bash completion for ferry. Generated from `ferry --help` and `ferry COMMAND --help`",
        "# by packaging/gen_docs.py at build time; do not edit.",
        "_ferry() {",
        "  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}",
        "  COMPREPLY=()",
        "  if ((COMP_CWORD == 1)); then",
        f"    COMPREPLY=($(compgen -W '{' '.join(top_words)}' -- \"$cur\"))",
        "    return",
        "  fi",
        "  local flags='' takes_file=''",
        "  case ${COMP_WORDS[1]} in",
    ]
    for c, _ in listed:
        h = parse(run_help(args.ferry, c), f"ferry {c}")
        flags = command_flags(h)
        if "--help" not in flags:
            flags["--help"] = ("switch", "")
        out.append(f"    {c})")
        out.append(f"      flags='{' '.join(sorted(flags))}'")
        if positional(h):
            out.append("      takes_file=1")
        by_kind = {}
        for f, (kind, words) in flags.items():
            if kind != "switch":
                by_kind.setdefault((kind, words), []).append(f)
        if by_kind:
            out.append("      case $prev in")
            for (kind, words), fs in sorted(by_kind.items()):
                pattern = "|".join(sorted(fs))
                if kind == "words":
                    action = f"COMPREPLY=($(compgen -W '{words}' -- \"$cur\"))"
                elif kind == "file":
                    action = "compopt -o filenames; COMPREPLY=($(compgen -f -- \"$cur\"))"
                elif kind == "dir":
                    action = "compopt -o filenames; COMPREPLY=($(compgen -d -- \"$cur\"))"
                else:
                    action = ":"  # a value to type: offer nothing rather than flags
                out.append(f"        {pattern}) {action}; return ;;")
            out.append("      esac")
        out.append("      ;;")
    out += [
        "    *) return ;;",
        "  esac",
        "  if [[ $cur == -* || -z $takes_file ]]; then",
        "    COMPREPLY=($(compgen -W \"$flags\" -- \"$cur\"))",
        "  else",
        "    compopt -o filenames",
        "    COMPREPLY=($(compgen -f -- \"$cur\"))",
        "  fi",
        "}",
        "complete -F _ferry ferry",
    ]
    with open(args.out, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("man")
    m.add_argument("--ferry", required=True)
    m.add_argument("--outdir", required=True)
    m.add_argument("commands", nargs="+")
    c = sub.add_parser("completion")
    c.add_argument("--ferry", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("commands", nargs="+")
    args = ap.parse_args()
    {"man": cmd_man, "completion": cmd_completion}[args.what](args)


if __name__ == "__main__":
    main()
