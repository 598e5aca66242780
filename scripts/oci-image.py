#!/usr/bin/env python3
"""Writes a one-layer OCI image (an image-layout tarball, as `ctr images import` loads) from a
directory, without a container engine or a base image.

The output is deterministic: entries sorted, owned by root (unless --chown says otherwise),
timestamps set to --created, gzip without a timestamp. The same inputs give the same digests.

  oci-image.py build --rootfs DIR --out IMAGE.tar --ref docker.io/vk-rs/x:1.0 [--ref ...]
      [--entrypoint /bin/x] [--cmd ARG ...] [--user 65532:65532] [--env K=V ...]
      [--label K=V ...] [--chown PATH=UID:GID ...] [--created UNIX_SECONDS]
  oci-image.py inspect IMAGE.tar       # JSON: refs, config, sizes, file list of the layer

Standard library only.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
import time

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# containerd names an imported image by this annotation (the OCI ref.name holds only the tag).
CONTAINERD_NAME = "io.containerd.image.name"
OCI_REF_NAME = "org.opencontainers.image.ref.name"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(rootfs, mtime, chown):
    """The uncompressed layer: every file, directory and symlink under rootfs, sorted."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = []
        for top, dirs, files in os.walk(rootfs):
            dirs.sort()
            for name in dirs + sorted(files):
                paths.append(os.path.join(top, name))
        paths.sort(key=lambda p: os.path.relpath(p, rootfs))
        for path in paths:
            rel = os.path.relpath(path, rootfs)
            info = tar.gettarinfo(path, arcname=rel)
            info.mtime = mtime
            info.uid, info.gid = chown.get(rel, (0, 0))
            info.uname = info.gname = ""
            # Hard links inside the tree become plain copies: simpler, and rare here.
            if info.type == tarfile.LNKTYPE:
                info = tar.gettarinfo(path, arcname=rel)
                info.type = tarfile.REGTYPE
                info.size = os.path.getsize(path)
                info.mtime = mtime
                info.uid, info.gid = chown.get(rel, (0, 0))
                info.uname = info.gname = ""
            info.pax_headers = {}
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def add_blob(tar, data, mtime):
    digest = sha256(data)
    info = tarfile.TarInfo("blobs/sha256/" + digest.split(":", 1)[1])
    info.size = len(data)
    info.mtime = mtime
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
    return digest


def add_file(tar, name, data, mtime, mode=0o644):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = mtime
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def add_dir(tar, name, mtime):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = mtime
    tar.addfile(info)


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def key_values(items, what):
    out = {}
    for item in items:
        if "=" not in item:
            sys.exit(f"oci-image: {what} {item!r} is not KEY=VALUE")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def build(args):
    mtime = args.created
    chown = {}
    for k, v in key_values(args.chown, "--chown").items():
        uid, gid = v.split(":", 1)
        chown[k.strip("/")] = (int(uid), int(gid))
    raw = layer_tar(args.rootfs, mtime, chown)
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=9) as f:
        f.write(raw)
    layer = gz.getvalue()

    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))
    labels = key_values(args.label, "--label")
    env = args.env or ["PATH=/usr/local/bin:/usr/bin:/bin"]
    image_config = {"Env": env, "WorkingDir": "/"}
    if args.user:
        image_config["User"] = args.user
    if args.entrypoint:
        image_config["Entrypoint"] = [args.entrypoint]
    if args.cmd:
        image_config["Cmd"] = args.cmd
    if labels:
        image_config["Labels"] = labels
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [sha256(raw)]},
        "history": [{"created": created, "created_by": "scripts/oci-image.py"}],
    }
    config_blob = canonical(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": sha256(config_blob), "size": len(config_blob)},
        "layers": [{"mediaType": MT_LAYER, "digest": sha256(layer), "size": len(layer)}],
        "annotations": {k: v for k, v in labels.items() if k.startswith("org.opencontainers.")},
    }
    manifest_blob = canonical(manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [
            {
                "mediaType": MT_MANIFEST,
                "digest": sha256(manifest_blob),
                "size": len(manifest_blob),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {CONTAINERD_NAME: ref, OCI_REF_NAME: ref.rsplit(":", 1)[1]},
            }
            for ref in args.ref
        ],
    }

    tmp = args.out + ".tmp"
    with open(tmp, "wb") as out, tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        add_file(tar, "oci-layout", canonical({"imageLayoutVersion": "1.0.0"}), mtime)
        add_file(tar, "index.json", canonical(index), mtime)
        add_dir(tar, "blobs", mtime)
        add_dir(tar, "blobs/sha256", mtime)
        for blob in (layer, config_blob, manifest_blob):
            add_blob(tar, blob, mtime)
    os.replace(tmp, args.out)
    json.dump(
        {
            "file": args.out,
            "refs": args.ref,
            "manifest_digest": sha256(manifest_blob),
            "archive_bytes": os.path.getsize(args.out),
            "layer_bytes": len(layer),
            "uncompressed_bytes": len(raw),
        },
        sys.stdout,
        indent=2,
    )
    print()


def inspect(args):
    with tarfile.open(args.image) as tar:
        def blob(digest):
            f = tar.extractfile("blobs/sha256/" + digest.split(":", 1)[1])
            return f.read()

        index = json.loads(tar.extractfile("index.json").read())
        refs = [m["annotations"][CONTAINERD_NAME] for m in index["manifests"]]
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        files, uncompressed = [], 0
        for layer in manifest["layers"]:
            data = gzip.decompress(blob(layer["digest"]))
            uncompressed += len(data)
            with tarfile.open(fileobj=io.BytesIO(data)) as lt:
                for m in lt.getmembers():
                    kind = "d" if m.isdir() else "l" if m.issym() else "f"
                    mode = stat.S_IMODE(m.mode)
                    files.append({"path": m.name, "type": kind, "mode": oct(mode),
                                  "uid": m.uid, "link": m.linkname or None})
    json.dump(
        {
            "refs": refs,
            "config": config["config"],
            "archive_bytes": os.path.getsize(args.image),
            "uncompressed_bytes": uncompressed,
            "files": files,
        },
        sys.stdout,
        indent=2,
    )
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--rootfs", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--ref", action="append", required=True,
                   help="full image name with tag, e.g. docker.io/vk-rs/node-shim:0.1.0")
    b.add_argument("--entrypoint")
    b.add_argument("--cmd", nargs="*")
    b.add_argument("--user")
    b.add_argument("--env", action="append", default=[])
    b.add_argument("--label", action="append", default=[])
    b.add_argument("--chown", action="append", default=[])
    b.add_argument("--created", type=int,
                   default=int(os.environ.get("SOURCE_DATE_EPOCH", "0")))
    i = sub.add_parser("inspect")
    i.add_argument("image")
    args = parser.parse_args()
    if args.command == "build":
        for ref in args.ref:
            if ":" not in ref.rsplit("/", 1)[-1]:
                sys.exit(f"oci-image: --ref {ref!r} has no tag")
        build(args)
    else:
        inspect(args)


if __name__ == "__main__":
    main()
