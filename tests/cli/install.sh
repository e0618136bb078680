# make install / make uninstall (sourced by tests/cli.sh): installs into a temporary prefix,
# runs the installed dap from another directory (it must find the shipped models there,
# through EXE/../share/dap, and $DAP_DATA_DIR must override that), builds a program against
# the installed header and library through dap.pc, then uninstalls and checks nothing is left.
pfx="$tmp/prefix"; away="$tmp/elsewhere"; mkdir -p "$away"
if make --no-print-directory -s -o "$DAP" -o build/libdap.a install PREFIX="$pfx" >"$tmp/out" 2>"$tmp/err"; then ok "make install PREFIX=tmp"
else bad "make install PREFIX=tmp: $(head -c 300 "$tmp/err")"; fi
missing=""
for f in bin/dap lib/libdap.a include/dap.h lib/pkgconfig/dap.pc share/dap/models/fmnist-dit.safetensors \
         share/dap/models/fmnist-convnet3.safetensors share/dap/models/fmnist-sampler.flags share/dap/models/dap-fmnist.flags; do
  [ -f "$pfx/$f" ] || missing="$missing $f"
done
[ -z "$missing" ] && ok "install puts the program, library, header, dap.pc and models in place" || bad "install lacks:$missing"
cmp -s "$pfx/share/dap/models/fmnist-dit.safetensors" models/fmnist-dit.safetensors \
  && ok "the installed model is the shipped one" || bad "the installed model differs from models/fmnist-dit.safetensors"
# from another directory: a models/ path and the default --model resolve to the installed files
if (cd "$away" && "$pfx/bin/dap" inspect models/fmnist-dit.safetensors) >"$tmp/out" 2>"$tmp/err" \
   && grep -q "x_embedder.proj.weight" "$tmp/out"; then ok "installed dap inspect models/... from another directory"
else bad "installed dap inspect from another directory: $(head -c 300 "$tmp/err")"; fi
if (cd "$away" && "$pfx/bin/dap" sample --classes 0 --n 1 --steps 2 --seed 0 --out s --threads 1) >"$tmp/out" 2>"$tmp/err" \
   && ls "$away"/s/*/0.png >/dev/null 2>&1; then ok "installed dap sample with the default model from another directory"
else bad "installed dap sample with the default model: $(head -c 300 "$tmp/err")"; fi
(cd "$away" && "$pfx/bin/dap" sample --help) | has "default: models/fmnist-dit.safetensors" \
  && ok "sample --help names its default model" || bad "sample --help names its default model"
# $DAP_DATA_DIR overrides the installed data directory (and its error names it)
(cd "$away" && DAP_DATA_DIR="$tmp/nodata" "$pfx/bin/dap" inspect models/fmnist-dit.safetensors) >/dev/null 2>"$tmp/err" \
  && bad "DAP_DATA_DIR overrides share/dap (exit 0)" \
  || { grep -qF "DAP_DATA_DIR ($tmp/nodata)" "$tmp/err" && ok "DAP_DATA_DIR overrides share/dap" \
       || bad "DAP_DATA_DIR overrides share/dap: $(head -c 300 "$tmp/err")"; }
if (cd "$away" && DAP_DATA_DIR="$OLDPWD" "$pfx/bin/dap" inspect models/fmnist-convnet3.safetensors) >/dev/null 2>"$tmp/err"
then ok "DAP_DATA_DIR=the source tree finds its models"; else bad "DAP_DATA_DIR=the source tree: $(head -c 300 "$tmp/err")"; fi
# a path that is not under models/ is never looked up elsewhere
expect_fail "other relative paths are not resolved" "fmnist-dit.safetensors: cannot open" \
  env DAP_DATA_DIR="$pfx/share/dap" "$pfx/bin/dap" inspect "$tmp/fmnist-dit.safetensors"
# a program built against the installed header and library, through pkg-config
if command -v pkg-config >/dev/null 2>&1; then
  printf '#include <dap.h>\n#include <stdio.h>\nint main(void) { printf("%%s %%s\\n", DAP_VERSION, dap_status_name(DAP_ERR_SHAPE)); return 0; }\n' > "$tmp/use.c"
  # shellcheck disable=SC2046
  if ${CC:-cc} -o "$tmp/use" "$tmp/use.c" $(PKG_CONFIG_PATH="$pfx/lib/pkgconfig" pkg-config --cflags --libs dap) 2>"$tmp/err" \
     && "$tmp/use" | has "^$($DAP --version | sed -n 's/^dap //p') "; then ok "a program links the installed libdap through dap.pc"
  else bad "linking through dap.pc: $(head -c 300 "$tmp/err")"; fi
else
  echo "note: pkg-config not installed, skipping the dap.pc link check"
fi
if make --no-print-directory -s uninstall PREFIX="$pfx" >"$tmp/out" 2>"$tmp/err"; then ok "make uninstall"
else bad "make uninstall: $(head -c 300 "$tmp/err")"; fi
left=$(find "$pfx" -type f 2>/dev/null | head -5)
[ -z "$left" ] && [ ! -e "$pfx/share/dap" ] && ok "uninstall leaves no file and no share/dap" || bad "uninstall left: $left $(ls -d "$pfx/share/dap" 2>/dev/null)"
# DESTDIR stages the same tree under another root
if make --no-print-directory -s -o "$DAP" -o build/libdap.a install DESTDIR="$tmp/stage" PREFIX=/opt/dap >/dev/null 2>"$tmp/err" \
   && [ -x "$tmp/stage/opt/dap/bin/dap" ] && grep -q "^prefix=/opt/dap$" "$tmp/stage/opt/dap/lib/pkgconfig/dap.pc" \
   && (cd "$away" && "$tmp/stage/opt/dap/bin/dap" inspect models/fmnist-convnet3.safetensors >/dev/null); then
  ok "install DESTDIR=stage PREFIX=/opt/dap"
else bad "install DESTDIR=stage PREFIX=/opt/dap: $(head -c 300 "$tmp/err")"; fi
make --no-print-directory -s uninstall DESTDIR="$tmp/stage" PREFIX=/opt/dap >/dev/null 2>&1
[ -z "$(find "$tmp/stage" -type f)" ] && ok "uninstall DESTDIR=stage" || bad "uninstall DESTDIR=stage left $(find "$tmp/stage" -type f | head -3)"
