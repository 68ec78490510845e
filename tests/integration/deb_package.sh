#!/usr/bin/env bash
# The Debian package: `cpack -G DEB` on the build gives hast_<version>_<arch>.deb
# holding hastd and hastctl in /usr/sbin, the unit in /usr/lib/systemd/system,
# the manual pages, bash completion, /etc/hast.conf as a conffile, the
# copyright file and changelog; its Depends come from the binaries (libcaf,
# libsystemd, ...); its maintainer scripts are the ones in scripts/debian;
# the programs run from the unpacked tree. lintian's findings are all
# printed; an error (E:, a Debian policy violation) fails the test, a
# warning (say, a manual page line groff cannot break) does not.
# cpack first builds the `preinstall` target, i.e. everything in <build-dir>
# that is not built yet (nothing, after a full build).
# Usage: deb_package.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"

(cd "$BUILD" && cpack -G DEB -B "$T/pkg") > "$T/cpack.out" 2>&1 \
  || fail "cpack failed: $(tail -n 20 "$T/cpack.out")"
debs=("$T"/pkg/hast_*.deb)
[[ ${#debs[@]} -eq 1 && -f ${debs[0]} ]] || fail "cpack made no single hast_*.deb: $(ls "$T/pkg")"
deb=${debs[0]}
pass "built $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)"

dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' > "$T/contents"
for want in /usr/sbin/hastd /usr/sbin/hastctl /usr/lib/systemd/system/hastd.service \
            /usr/share/man/man8/hastd.8.gz /usr/share/man/man8/hastctl.8.gz \
            /usr/share/man/man5/hast.conf.5.gz /usr/share/bash-completion/completions/hastctl \
            /etc/hast.conf /usr/share/doc/hast/copyright /usr/share/doc/hast/changelog.gz; do
  grep -qxF "$want" "$T/contents" || fail "the package lacks $want"
done
! grep -qE '/(tests?|bench|fuzz)[^/]*$|_test$|hast_fuzz|hast_bench' "$T/contents" \
  || fail "the package holds test, bench or fuzz programs: $(grep -E 'test|bench|fuzz' "$T/contents")"
pass "contents: programs, unit, manual pages, completion, /etc/hast.conf, copyright, changelog"

dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/share/doc/hast/copyright > "$T/copyright"
grep -qx "License: BSD-2-Clause" "$T/copyright" && grep -q "The hast authors" "$T/copyright" \
  || fail "the copyright file does not name BSD-2-Clause and The hast authors: $(cat "$T/copyright")"
pass "copyright: BSD-2-Clause, The hast authors (as LICENSE)"

dpkg-deb -I "$deb" > "$T/info"
depends=$(sed -n 's/^ Depends: //p' "$T/info")
for lib in libcaf-core libsystemd0 libc6 libstdc++6; do
  [[ $depends == *"$lib"* ]] || fail "Depends lacks $lib: '$depends'"
done
grep -q "^ Recommends: .*libnbd-bin" "$T/info" || fail "no Recommends: libnbd-bin: $(cat "$T/info")"
dpkg-deb -e "$deb" "$T/control"
[[ $(cat "$T/control/conffiles") == /etc/hast.conf ]] \
  || fail "conffiles is not exactly /etc/hast.conf: $(cat "$T/control/conffiles")"
for script in postinst prerm postrm; do
  [[ -x $T/control/$script ]] || fail "no executable $script in the package"
  cmp -s "$T/control/$script" "$(dirname "$0")/../../scripts/debian/$script" \
    || fail "$script differs from scripts/debian/$script"
  sh -n "$T/control/$script" || fail "$script: sh syntax error"
done
pass "Depends: $depends"

dpkg -x "$deb" "$T/x"
ldd "$T/x/usr/sbin/hastd" "$T/x/usr/sbin/hastctl" > "$T/ldd" 2>&1
! grep -q "not found" "$T/ldd" || fail "unresolved libraries: $(grep 'not found' "$T/ldd")"
"$T/x/usr/sbin/hastctl" --help > "$T/help" 2>&1 || fail "hastctl --help failed: $(cat "$T/help")"
grep -q "usage" "$T/help" || fail "hastctl --help printed no usage: $(cat "$T/help")"
"$T/x/usr/sbin/hastd" --help > "$T/help" 2>&1 || fail "hastd --help failed: $(cat "$T/help")"
"$T/x/usr/sbin/hastd" -c "$T/x/etc/hast.conf" -n hasta --check-config > "$T/help" 2>&1 \
  || fail "the packaged hastd rejects the packaged /etc/hast.conf: $(cat "$T/help")"
! readelf -S "$T/x/usr/sbin/hastd" | grep -qE '\.(debug_info|symtab)\b' || fail "hastd is not stripped"
pass "unpacked: libraries resolve, hastctl/hastd --help, --check-config on /etc/hast.conf, stripped"

echo "---- lintian $(basename "$deb"):"
lintian --tag-display-limit 0 "$deb" > "$T/lintian" 2>&1 || true
sed 's/^/  /' "$T/lintian"
! grep -q '^E: ' "$T/lintian" || fail "lintian errors: $(grep '^E: ' "$T/lintian")"
pass "lintian: no errors, $(grep -c '^W: ' "$T/lintian" || true) warning(s)"
