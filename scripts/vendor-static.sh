#!/usr/bin/env bash
# Refreshes the front-end packages vendored under static/vendor/ from the npm registry.
# The portal never loads anything from a CDN: users' networks may block one, and ours has none.
# Change a version here, run `make vendor`, and commit static/vendor/ together with VERSIONS.
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A PKGS=(
  [bootstrap]=5.3.9
  [bootstrap-icons]=1.13.2
  [htmx.org]=2.0.11
  [ansi_up]=6.0.6
  [axe-core]=4.10.3
  [swagger-ui-dist]=5.35.0
)
# CodeMirror 6 comes as ES modules: the parts the Containerfile editor uses (scripts/codemirror/entry.mjs) are bundled
# once, with esbuild, into one script that sets window.PortalCodeMirror. Its versions, and those of what it pulls in,
# are pinned by scripts/codemirror/package.json and package-lock.json (npm ci).
dest=static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for name in "${!PKGS[@]}"; do
  (cd "$work" && npm pack --silent "$name@${PKGS[$name]}" >/dev/null)
  mkdir -p "$work/$name" && tar -xzf "$work"/"$(echo "$name" | tr -d '@' | tr '/' '-')"-"${PKGS[$name]}".tgz -C "$work/$name"
done
mkdir -p "$work/codemirror" && cp scripts/codemirror/{entry.mjs,package.json,package-lock.json} "$work/codemirror/"
(cd "$work/codemirror" && npm ci --silent --no-audit --no-fund --ignore-scripts \
  && node node_modules/esbuild/install.js \
  && node_modules/.bin/esbuild entry.mjs --bundle --format=iife --global-name=PortalCodeMirror --minify \
     --legal-comments=eof --log-level=warning --outfile=codemirror.min.js)
rm -rf "$dest" && mkdir -p "$dest"/{bootstrap,bootstrap-icons/fonts,htmx,ansi_up,codemirror,swagger-ui}
cp "$work/codemirror/codemirror.min.js" "$dest/codemirror/"
cp "$work/bootstrap/package/dist/css/bootstrap.min.css" "$work/bootstrap/package/dist/css/bootstrap.min.css.map" "$dest/bootstrap/"
cp "$work/bootstrap/package/dist/js/bootstrap.bundle.min.js" "$work/bootstrap/package/dist/js/bootstrap.bundle.min.js.map" "$dest/bootstrap/"
cp "$work/bootstrap-icons/package/font/bootstrap-icons.min.css" "$dest/bootstrap-icons/"
cp "$work/bootstrap-icons/package/font/fonts/"bootstrap-icons.woff* "$dest/bootstrap-icons/fonts/"
cp "$work/htmx.org/package/dist/htmx.min.js" "$dest/htmx/"
cp "$work/ansi_up/package/ansi_up.js" "$dest/ansi_up/ansi_up.js"
# The REST API's docs page (/api/v1/docs/): Swagger UI's bundle and styles, nothing else of the package.
cp "$work/swagger-ui-dist/package/"{swagger-ui-bundle.js,swagger-ui.css,LICENSE} "$dest/swagger-ui/"
# Its source map is not vendored, so its reference goes: collectstatic's manifest storage (DEBUG=false) fails on it.
sed -i '/sourceMappingURL=swagger-ui.css.map/d' "$dest/swagger-ui/swagger-ui.css"
# axe-core is for the accessibility tests only (tests/portal/test_accessibility.py): kept beside the tests, never served.
mkdir -p tests/vendor/axe-core && cp "$work/axe-core/package/axe.min.js" tests/vendor/axe-core/
{
  echo "# Vendored front-end packages (npm name@version). Refresh with: make vendor"
  for name in $(echo "${!PKGS[@]}" | tr ' ' '\n' | sort); do echo "$name@${PKGS[$name]}"; done
  node -e 'const d = require("./scripts/codemirror/package.json").dependencies;
    for (const n of Object.keys(d).filter(n => n !== "esbuild")) console.log(`${n}@${d[n]} (bundled with esbuild@${d.esbuild})`)' 
} > "$dest/VERSIONS"
echo "vendored into $dest:"; cat "$dest/VERSIONS"
