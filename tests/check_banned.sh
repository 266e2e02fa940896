#!/bin/sh
# usage: check_banned.sh [SOURCE_DIR]
# Fails when src/, include/ or examples/ call a banned function (STYLE.md
# item 24). Use instead: snprintf (sprintf, vsprintf), strtol/strtoul with
# error checks (atoi), memcpy with a known length or snprintf (strcpy,
# strcat), strtok_r (strtok), fgets (gets).
set -u
root=${1:-.}

# Whole words only: snprintf, vsnprintf, strncpy, strtok_r and fgets pass.
words='atoi|strcpy|strcat|strtok|vsprintf'
calls='sprintf|gets'
pattern="(^|[^A-Za-z0-9_])(${words})([^A-Za-z0-9_]|\$)|(^|[^A-Za-z0-9_])(${calls})[[:space:]]*\\("

dirs=""
for d in src include examples; do
  if [ -d "$root/$d" ]; then
    dirs="$dirs $root/$d"
  fi
done
if [ -z "$dirs" ]; then
  echo "check_banned: no src/, include/ or examples/ under $root"
  exit 1
fi

# shellcheck disable=SC2086 # $dirs is a list of directories
hits=$(grep -rnE --include='*.c' --include='*.h' --include='*.cc' \
  --include='*.cpp' --include='*.hpp' "$pattern" $dirs)
if [ -n "$hits" ]; then
  echo "check_banned: banned functions (atoi sprintf strcpy strcat strtok gets vsprintf):"
  echo "$hits"
  exit 1
fi
echo "check_banned: none of atoi sprintf strcpy strcat strtok gets vsprintf in$dirs"
