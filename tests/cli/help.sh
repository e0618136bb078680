# Help text (sourced by tests/cli.sh): `dap --help` and every `dap CMD --help` end with an
# "Example:" line followed by one command line that starts with "dap " and whose flags the
# command accepts (the example, with --help appended, parses and exits 0).
# last_example FILE: the example line when the file ends with "Example:" + one line, else ""
last_example() { tail -n 2 "$1" | { read -r a; read -r b; [ "$a" = "Example:" ] && echo "$b" | sed 's/^ *//'; }; }
dap_abs="$(cd "$(dirname "$DAP")" && pwd)/$(basename "$DAP")"
$DAP --help > "$tmp/help" 2>&1
ex=$(last_example "$tmp/help")
case "$ex" in "dap "*) ok "dap --help ends with an example";; *) bad "dap --help ends with an example (last lines: $(tail -n 2 "$tmp/help" | tr '\n' '|'))";; esac
cmds=$($DAP --help | sed -n '/^commands:/,/^$/p' | awk 'NF && $1 != "commands:" {print $1}')
[ "$(echo "$cmds" | wc -w)" -ge 10 ] && ok "dap --help lists the commands" || bad "dap --help lists the commands: $cmds"
# subcommands a command's help names ("dap vae encode --help") are checked the same way
subs=$(for c in $cmds; do $DAP "$c" --help 2>/dev/null | grep -oE "dap $c [a-z]+ --help" | sed 's/^dap //; s/ --help$//'; done | sort -u | tr ' ' '~')
for c in $cmds $subs; do
  c=${c//\~/ }
  # shellcheck disable=SC2086
  if ! $DAP $c --help > "$tmp/help" 2>&1; then bad "dap $c --help exits 0"; continue; fi
  ex=$(last_example "$tmp/help")
  case "$ex" in
    "dap $c "*|"dap $c")
      # the example's flags parse: `dap CMD flags... --help` stops at --help and exits 0
      # shellcheck disable=SC2086
      if (cd "$tmp" && "$dap_abs" ${ex#dap } --help) >/dev/null 2>"$tmp/err"; then ok "dap $c --help ends with an example that parses"
      else bad "dap $c example '$ex' does not parse: $(head -c 200 "$tmp/err")"; fi ;;
    *) bad "dap $c --help ends with an Example: line and a 'dap $c ...' line (add one to the examples table in tools/dap.c; last lines: $(tail -n 2 "$tmp/help" | tr '\n' '|'))" ;;
  esac
done
