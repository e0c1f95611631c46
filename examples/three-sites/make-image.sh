#!/usr/bin/env bash
# Builds localhost/rouse-httpd:latest, a tiny web server image made from busybox-static, and a
# page for each of the three example sites under /srv/rouse-sites. No registry is needed.
#   apt-get install podman busybox-static      (Debian)   |   dnf install podman busybox (Fedora)
set -euo pipefail
busybox=$(command -v busybox)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/www"
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/httpd"
ln -s busybox "$root/bin/sh"
tar -C "$root" -cf "$root.tar" .
podman import "$root.tar" localhost/rouse-httpd:latest
rm -f "$root.tar"
for site in blog wiki shop; do
  mkdir -p "/srv/rouse-sites/$site"
  echo "<h1>$site</h1><p>served by a container that rouse started on demand</p>" \
    > "/srv/rouse-sites/$site/index.html"
done
echo "built localhost/rouse-httpd:latest; pages in /srv/rouse-sites"
