#!/usr/bin/env bash
# Rebuilds protos/baseline/npcserver-v1.binpb, the schema tests/test_proto_lint.py checks for breaking changes,
# from the protos of a released commit:
#
#   tools/buf/baseline.sh <git-rev>     # for example the tag of the new release
#
# Run it when a release ships, then commit the image. The build is reproducible: the same commit gives the same
# bytes.
set -euo pipefail

rev="${1:?usage: tools/buf/baseline.sh <git-rev of the released schema>}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bash "$here/install.sh"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git -C "$repo" archive "$rev" protos | tar -x -C "$work"
# The released tree may predate buf.yaml; the current one sets the module root the same way.
cp "$repo/protos/buf.yaml" "$work/protos/buf.yaml"
rm -rf "$work/protos/baseline"
"$here/node_modules/.bin/buf" build "$work/protos" -o "$repo/protos/baseline/npcserver-v1.binpb"
echo "wrote protos/baseline/npcserver-v1.binpb from $rev"
