#!/usr/bin/env bash
# The Django tests run on MariaDB through mysqlclient (Django's recommended driver), which compiles against the
# MariaDB client headers. Install them when they are missing and we may (root with apt-get); otherwise say how: the
# virtualenv install then fails on mysqlclient with that reason.
set -euo pipefail
if command -v pkg-config >/dev/null 2>&1 && { pkg-config --exists mariadb || pkg-config --exists mysqlclient; }; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's libmariadb-dev and pkg-config for mysqlclient (apt-get)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmariadb-dev pkg-config >/dev/null
else
  echo "The MariaDB client headers are missing (mysqlclient needs them): sudo apt-get install libmariadb-dev pkg-config" >&2
fi
