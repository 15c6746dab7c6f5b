"""One side of a changed /etc file, read over SSH from a host: a header line (`#file SIZE`, `#link TARGET`, `#dir`,
`#special` or `#missing`), then the file's first bytes. A symbolic link is named and never followed (it could point at
/etc/shadow). Used by `portal.ssh.etc_file`; the fleet simulator answers the same script."""

ETC_FILE_SCRIPT = r"""
p=$1; n=$2
if [ -L "$p" ]; then printf '#link %s\n' "$(readlink -- "$p")"
elif [ -d "$p" ]; then echo '#dir'
elif [ -f "$p" ]; then printf '#file %s\n' "$(wc -c < "$p")"; head -c "$n" -- "$p"
elif [ -e "$p" ]; then echo '#special'
else echo '#missing'; fi
"""
