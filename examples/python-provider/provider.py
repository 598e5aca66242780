#!/usr/bin/env python3
"""A minimal PodProvider in Python: runs each pod's containers as local processes.

It exists to show that the podprovider.v1 contract is language-neutral and to be a starting point
for providers in other languages. The stubs are generated at start from proto/ (grpcio-tools), so
the provider always speaks the repository's contract.

The "cloud" is the state directory: one directory per pod UID, holding the pod's identity, and per
container a log (each line stamped with its time) and, once it ended, its exit code. Containers run
under a small supervisor (this file with --supervise) in their own session, so they outlive a
restart of the provider, which rebuilds its state from the directory alone.

Not offered (UNIMPLEMENTED): UpdatePod, Attach, PortForward, GetStats. Not honoured: images (the
command runs on this host), restart policies (containers are not restarted), volume mounts (files
volumes are written under the pod's directory), resources. Unsupported volume types and init
containers are refused with INVALID_ARGUMENT.
"""

import argparse
import datetime
import json
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "..", "..", "proto", "proto")
SERVICE = "podprovider.v1.PodProvider"
PROVIDER_NAME = "python-example"
VERSION = "0.1.0"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
POLL_SECONDS = 0.3


def log(msg):
    # Identity only (namespace/name/uid): pod contents may hold secrets and are never printed.
    print(f"{datetime.datetime.now().isoformat()} {msg}", file=sys.stderr, flush=True)


def now_rfc3339():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e9):09d}Z"


def parse_rfc3339(ts):
    # Our own stamps only: YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ
    base, frac = ts.rstrip("Z").split(".")
    secs = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc
    ).timestamp()
    return secs + float("0." + frac)


# --------------------------------------------------------------------------------------------
# Supervisor mode: runs one container command, stamps its output lines, records its exit code.
# --------------------------------------------------------------------------------------------


def supervise(container_dir, argv):
    # Detach: the provider's child exits at once, and this process, reparented and leading its own
    # session and process group, lives on whatever happens to the provider.
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    tmp = os.path.join(container_dir, "pid.tmp")
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, os.path.join(container_dir, "pid"))
    logf = open(os.path.join(container_dir, "log"), "ab", buffering=0)
    try:
        child = subprocess.Popen(
            argv,
            cwd=os.path.join(container_dir, "work"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    except OSError as e:
        logf.write(f"{now_rfc3339()} cannot start: {e.strerror}\n".encode())
        code = 127 if isinstance(e, FileNotFoundError) else 126
        write_exit(container_dir, code)
        return code

    def forward(signum, _frame):
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    for line in iter(child.stdout.readline, b""):
        if not line.endswith(b"\n"):
            line += b"\n"
        logf.write(now_rfc3339().encode() + b" " + line)
    code = child.wait()
    write_exit(container_dir, code if code >= 0 else 128 - code)
    return 0


def write_exit(container_dir, code):
    tmp = os.path.join(container_dir, "exit.tmp")
    with open(tmp, "w") as f:
        json.dump({"code": code, "finished": now_rfc3339()}, f)
    os.replace(tmp, os.path.join(container_dir, "exit"))


# --------------------------------------------------------------------------------------------
# Provider mode.
# --------------------------------------------------------------------------------------------


def generate_stubs():
    """Generates the Python stubs from proto/ into a temporary directory and imports them."""
    from grpc_tools import protoc
    import importlib.resources

    out = tempfile.mkdtemp(prefix="podprovider-stubs-")
    include = str(importlib.resources.files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "podprovider/v1/podprovider.proto",
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed to generate the stubs")
    sys.path.insert(0, out)
    from podprovider.v1 import podprovider_pb2, podprovider_pb2_grpc

    return podprovider_pb2, podprovider_pb2_grpc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT or unix:/PATH")
    parser.add_argument(
        "--state-dir",
        default=os.path.join(tempfile.gettempdir(), "python-provider"),
        help="where pods live; keep it across restarts",
    )
    parser.add_argument("--supervise", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.supervise:
        if rest and rest[0] == "--":
            rest = rest[1:]
        sys.exit(supervise(args.supervise, rest))

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    pb, pb_grpc = generate_stubs()
    provider = Provider(pb, grpc, os.path.abspath(args.state_dir))

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=64),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    pb_grpc.add_PodProviderServicer_to_server(provider, server)
    health_servicer = health.HealthServicer()
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    serve_reflection(grpc, server, (SERVICE, health.SERVICE_NAME))
    if args.listen.startswith("unix:"):
        path = args.listen[len("unix:"):]
        if os.path.exists(path):
            os.unlink(path)
        address = f"unix:{path}"
    else:
        address = args.listen
    if server.add_insecure_port(address) == 0:
        sys.exit(f"cannot listen on {args.listen}")
    server.start()
    log(f"serving {SERVICE} on {args.listen}, pods in {provider.state_dir}")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    # Pods keep running: they are the "cloud", and the next provider finds them.
    provider.shutdown()
    server.stop(grace=1).wait()
    log("stopped")


def serve_reflection(grpc, server, services):
    """Reflection v1alpha (grpcio-reflection) and v1, which the package does not ship: the v1 protos
    are the v1alpha ones under a new package name, identical on the wire."""
    from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

    v1 = "grpc.reflection.v1.ServerReflection"
    servicer = reflection.ReflectionServicer((*services, reflection.SERVICE_NAME, v1))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    handler = grpc.method_handlers_generic_handler(
        v1,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))


class Provider:
    """The PodProvider servicer (method names as generated)."""

    def __init__(self, pb, grpc, state_dir):
        self.pb = pb
        self.grpc = grpc
        self.state_dir = state_dir
        os.makedirs(state_dir, exist_ok=True)
        self.lock = threading.Lock()
        self.last = {}  # uid -> PodStatus last reported
        self.watchers = []  # (node_name, queue)
        self.stopping = threading.Event()
        # The first poll rebuilds the state from the directory, before any call is answered.
        self.poll()
        threading.Thread(target=self.poll_loop, daemon=True).start()

    def shutdown(self):
        self.stopping.set()
        with self.lock:
            for _, q in self.watchers:
                q.put(None)

    # ----- pods on disk -----

    def pod_dir(self, uid):
        return os.path.join(self.state_dir, uid)

    def pod_meta(self, uid):
        try:
            with open(os.path.join(self.pod_dir(uid), "pod.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def uids(self):
        try:
            return sorted(
                d for d in os.listdir(self.state_dir) if os.path.exists(os.path.join(self.state_dir, d, "pod.json"))
            )
        except OSError:
            return []

    def container_status(self, uid, name, meta):
        pb = self.pb
        cdir = os.path.join(self.pod_dir(uid), "containers", name)
        st = pb.ContainerStatus(name=name, image=meta["images"].get(name, ""))
        exit_path = os.path.join(cdir, "exit")
        started = meta.get("started", {}).get(name)
        pid = read_pid(cdir)
        if not os.path.exists(exit_path) and pid is not None and not group_alive(pid):
            # Killed with its supervisor (SIGKILL), which could not record the exit.
            write_exit(cdir, 137)
        if os.path.exists(exit_path):
            try:
                with open(exit_path) as f:
                    ex = json.load(f)
            except (OSError, ValueError):
                ex = {"code": 137, "finished": now_rfc3339()}
            term = pb.ContainerStateTerminated(
                exit_code=ex["code"], reason="Completed" if ex["code"] == 0 else "Error"
            )
            if started:
                term.started_at.FromJsonString(started)
            term.finished_at.FromJsonString(ex["finished"])
            st.state.terminated.CopyFrom(term)
        elif started:
            st.state.running.started_at.FromJsonString(started)
            st.ready = True
            st.started = True
            st.container_id = f"local://{uid}/{name}"
        else:
            st.state.waiting.reason = "ContainerCreating"
        return st

    def status(self, uid):
        pb = self.pb
        meta = self.pod_meta(uid)
        if meta is None:
            return None
        s = pb.PodStatus(
            pod_ref=pb.PodRef(namespace=meta["namespace"], name=meta["name"], uid=uid),
            cloud_id=f"local://{uid}",
            pod_ip="127.0.0.1",
            pod_ips=["127.0.0.1"],
        )
        if meta.get("start_time"):
            s.start_time.FromJsonString(meta["start_time"])
        statuses = [self.container_status(uid, n, meta) for n in meta["containers"]]
        s.container_statuses.extend(statuses)
        kinds = [c.state.WhichOneof("state") for c in statuses]
        if all(k == "terminated" for k in kinds):
            failed = any(c.state.terminated.exit_code != 0 for c in statuses)
            s.phase = pb.POD_PHASE_FAILED if failed else pb.POD_PHASE_SUCCEEDED
        elif any(k == "running" for k in kinds):
            s.phase = pb.POD_PHASE_RUNNING
        else:
            s.phase = pb.POD_PHASE_PENDING
        return s

    def node_of(self, uid):
        meta = self.pod_meta(uid)
        return meta["node_name"] if meta else None

    # ----- the status poller: one pass over every pod, differences pushed -----

    def poll_loop(self):
        while not self.stopping.wait(POLL_SECONDS):
            try:
                self.poll()
            except Exception as e:  # a bad pod directory must not stop the poller
                log(f"poll failed: {e!r}")

    def poll(self):
        pb = self.pb
        current = {}
        for uid in self.uids():
            meta = self.pod_meta(uid)
            if meta and meta.get("deleting") and self.all_exited(uid, meta):
                shutil.rmtree(self.pod_dir(uid), ignore_errors=True)
                continue
            st = self.status(uid)
            if st is not None:
                current[uid] = st
        with self.lock:
            for uid, st in current.items():
                if self.last.get(uid) != st:
                    self.broadcast(pb.WatchPodsEvent(status=st), self.node_of(uid))
            for uid, old in list(self.last.items()):
                if uid not in current:
                    self.broadcast(pb.WatchPodsEvent(deleted=old.pod_ref), None)
            self.last = current

    def broadcast(self, event, node):
        for watch_node, q in self.watchers:
            if node is None or not watch_node or watch_node == node:
                q.put(event)

    def all_exited(self, uid, meta):
        return all(
            os.path.exists(os.path.join(self.pod_dir(uid), "containers", n, "exit")) for n in meta["containers"]
        )

    # ----- helpers -----

    def require_ref(self, ref, context):
        if not (ref.namespace and ref.name and ref.uid):
            context.abort(self.grpc.StatusCode.INVALID_ARGUMENT, "pod_ref needs namespace, name and uid")
        return ref

    def known(self, ref, context):
        self.require_ref(ref, context)
        meta = self.pod_meta(ref.uid)
        if meta is None:
            context.abort(self.grpc.StatusCode.NOT_FOUND, f"pod {ref.namespace}/{ref.name} is not known")
        return meta

    def container_name(self, meta, name, context):
        if not name:
            if len(meta["containers"]) == 1:
                return meta["containers"][0]
            context.abort(self.grpc.StatusCode.INVALID_ARGUMENT, "a container name is required")
        if name not in meta["containers"]:
            context.abort(self.grpc.StatusCode.NOT_FOUND, f"container {name!r} is not in the pod")
        return name

    # ----- RPCs -----

    def GetNodeInfo(self, request, context):
        pb = self.pb
        mem_kib = 0
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemTotal:"):
                        mem_kib = int(line.split()[1])
        except OSError:
            pass
        arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "amd64")
        capacity = {"cpu": str(os.cpu_count() or 1), "memory": f"{mem_kib}Ki", "pods": "100"}
        return pb.NodeInfo(
            provider_name=PROVIDER_NAME,
            provider_version=VERSION,
            capacity=capacity,
            operating_system="linux",
            architecture=arch,
            system_info=pb.NodeSystemInfo(
                os_image="local processes", container_runtime_version=f"local://{VERSION}"
            ),
            revision="1",
        )

    def Ping(self, request, context):
        return self.pb.PingResponse(ready=True, node_info_revision="1")

    def CreatePod(self, request, context):
        pb = self.pb
        pod = request.pod
        if not pod.HasField("pod_ref"):
            context.abort(self.grpc.StatusCode.INVALID_ARGUMENT, "pod_ref is required")
        ref = self.require_ref(pod.pod_ref, context)
        with self.lock:
            existing = self.status(ref.uid)
        if existing is not None:
            return pb.CreatePodResponse(status=existing)  # idempotent on the UID
        self.validate(pod, context)
        pdir = self.pod_dir(ref.uid)
        os.makedirs(os.path.join(pdir, "containers"), exist_ok=True)
        for v in pod.volumes:
            if v.WhichOneof("source") == "files":
                base = os.path.join(pdir, "volumes", v.name)
                for entry in v.files.files:
                    path = os.path.normpath(os.path.join(base, entry.path))
                    if not path.startswith(base + os.sep):
                        context.abort(self.grpc.StatusCode.INVALID_ARGUMENT, f"volume {v.name}: bad path")
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    with os.fdopen(fd, "wb") as f:
                        f.write(entry.content)
        meta = {
            "namespace": ref.namespace,
            "name": ref.name,
            "node_name": pod.node_name,
            "containers": [c.name for c in pod.containers],
            "images": {c.name: c.image for c in pod.containers},
            "grace": pod.termination_grace_period_seconds if pod.HasField("termination_grace_period_seconds") else 30,
            "start_time": now_rfc3339(),
            "started": {},
        }
        for c in pod.containers:
            cdir = os.path.join(pdir, "containers", c.name)
            os.makedirs(os.path.join(cdir, "work"), exist_ok=True)
            open(os.path.join(cdir, "log"), "ab").close()
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            env.update({e.name: e.value for e in c.env})
            subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--supervise", cdir, "--", *c.command, *c.args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=True,
            )
            # The detached supervisor records its pid (= its process group) first thing.
            deadline = time.time() + 5
            while read_pid(cdir) is None and time.time() < deadline:
                time.sleep(0.01)
            meta["started"][c.name] = now_rfc3339()
        tmp = os.path.join(pdir, "pod.json.tmp")
        with open(tmp, "w") as f:
            json.dump(meta, f)
        os.replace(tmp, os.path.join(pdir, "pod.json"))
        log(f"created pod {ref.namespace}/{ref.name} ({ref.uid})")
        with self.lock:
            # Visible at once: in every later snapshot and on open streams, not after the next poll.
            status = self.status(ref.uid)
            if self.last.get(ref.uid) != status:
                self.last[ref.uid] = status
                self.broadcast(pb.WatchPodsEvent(status=status), pod.node_name)
        status = pb.PodStatus()
        status.CopyFrom(self.last[ref.uid])
        status.phase = pb.POD_PHASE_PENDING  # accepted; progress comes on the stream
        return pb.CreatePodResponse(status=status)

    def validate(self, pod, context):
        abort = lambda msg: context.abort(self.grpc.StatusCode.INVALID_ARGUMENT, msg)
        if pod.init_containers:
            abort("init containers are not supported by the python example provider")
        if not pod.containers:
            abort("the pod has no containers")
        for v in pod.volumes:
            kind = v.WhichOneof("source")
            if kind == "unsupported":
                abort(f"volume {v.name}: type {v.unsupported.kind} is not supported by the python example provider")
            if kind not in ("files", "empty_dir"):
                abort(f"volume {v.name}: type {kind} is not supported by the python example provider")
        for c in pod.containers:
            if not c.command:
                abort(f"container {c.name}: a command is required (the python example provider runs no images)")

    def DeletePod(self, request, context):
        ref = self.require_ref(request.pod_ref, context)
        meta = self.pod_meta(ref.uid)
        if meta is None:
            return self.pb.DeletePodResponse(found=False)
        grace = request.grace_period_seconds if request.HasField("grace_period_seconds") else meta["grace"]
        meta["deleting"] = True
        with open(os.path.join(self.pod_dir(ref.uid), "pod.json"), "w") as f:
            json.dump(meta, f)
        pids = [read_pid(os.path.join(self.pod_dir(ref.uid), "containers", n)) for n in meta["containers"]]
        pids = [p for p in pids if p is not None]
        threading.Thread(target=self.stop_pids, args=(pids, grace), daemon=True).start()
        log(f"deleting pod {ref.namespace}/{ref.name} ({ref.uid}), grace {grace} s")
        return self.pb.DeletePodResponse(found=True)

    def stop_pids(self, pids, grace):
        def signal_all(sig):
            for pid in pids:
                try:
                    os.killpg(pid, sig)  # the supervisor leads its own session and group
                except (ProcessLookupError, PermissionError):
                    pass

        if grace > 0:
            signal_all(signal.SIGTERM)
            deadline = time.time() + grace
            while time.time() < deadline and any(group_alive(p) for p in pids):
                time.sleep(0.1)
        signal_all(signal.SIGKILL)

    def GetPod(self, request, context):
        self.known(request.pod_ref, context)
        return self.pb.GetPodResponse(status=self.status(request.pod_ref.uid))

    def ListPods(self, request, context):
        out = []
        for uid in self.uids():
            meta = self.pod_meta(uid)
            if meta and (not request.node_name or meta["node_name"] == request.node_name):
                st = self.status(uid)
                if st is not None:
                    out.append(st)
        return self.pb.ListPodsResponse(pods=out)

    def WatchPods(self, request, context):
        pb = self.pb
        q = queue.Queue()
        entry = (request.node_name, q)
        with self.lock:
            # Snapshot and registration under one lock: no change falls between them.
            snapshot = [s for uid, s in self.last.items() if not request.node_name or self.node_of(uid) == request.node_name]
            self.watchers.append(entry)
        context.add_callback(lambda: q.put(None))
        try:
            for s in snapshot:
                yield pb.WatchPodsEvent(status=s)
            yield pb.WatchPodsEvent(synced=pb.Synced())
            while context.is_active():
                event = q.get()
                if event is None:
                    return
                yield event
        finally:
            with self.lock:
                if entry in self.watchers:
                    self.watchers.remove(entry)

    def GetContainerLogs(self, request, context):
        pb = self.pb
        meta = self.known(request.pod_ref, context)
        name = self.container_name(meta, request.container, context)
        if request.previous:
            context.abort(self.grpc.StatusCode.NOT_FOUND, "containers are never restarted: there is no previous instance")
        cdir = os.path.join(self.pod_dir(request.pod_ref.uid), "containers", name)
        since = None
        if request.HasField("since_seconds"):
            since = time.time() - request.since_seconds
        elif request.HasField("since_time"):
            since = request.since_time.seconds + request.since_time.nanos / 1e9
        budget = request.limit_bytes if request.HasField("limit_bytes") else None

        def render(raw):
            ts, _, text = raw.partition(b" ")
            if since is not None and parse_rfc3339(ts.decode()) < since:
                return None
            return raw if request.timestamps else text

        try:
            f = open(os.path.join(cdir, "log"), "rb")
        except OSError:
            context.abort(self.grpc.StatusCode.NOT_FOUND, "the container has no log")
        with f:
            lines = [l for l in (render(r) for r in f.readlines() if r.endswith(b"\n")) if l is not None]
            if request.HasField("tail_lines"):
                lines = lines[len(lines) - min(len(lines), max(request.tail_lines, 0)):]
            for line in lines:
                if budget is not None:
                    if budget <= 0:
                        return
                    line = line[:budget]
                    budget -= len(line)
                yield pb.LogChunk(data=line)
            if not request.follow:
                return
            pending = b""
            while context.is_active():
                chunk = f.readline()
                if chunk:
                    pending += chunk
                    if pending.endswith(b"\n"):
                        line = render(pending)
                        pending = b""
                        if line is not None:
                            yield pb.LogChunk(data=line)
                    continue
                if os.path.exists(os.path.join(cdir, "exit")) or not os.path.exists(cdir):
                    return
                time.sleep(0.2)

    def Exec(self, request_iterator, context):
        pb = self.pb
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("request") != "start":
            context.abort(self.grpc.StatusCode.INVALID_ARGUMENT, "the first message must be start")
        start = first.start
        meta = self.known(start.pod_ref, context)
        name = self.container_name(meta, start.container, context)
        cdir = os.path.join(self.pod_dir(start.pod_ref.uid), "containers", name)
        if os.path.exists(os.path.join(cdir, "exit")) or meta.get("deleting"):
            context.abort(self.grpc.StatusCode.FAILED_PRECONDITION, f"container {name} is not running")
        if not start.command:
            context.abort(self.grpc.StatusCode.INVALID_ARGUMENT, "exec needs a command")
        out = queue.Queue()
        try:
            proc = subprocess.Popen(
                list(start.command),
                cwd=os.path.join(cdir, "work"),
                stdin=subprocess.PIPE if start.stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                # With a TTY there is no separate stderr (the contract); we have no TTY, so merge.
                stderr=subprocess.STDOUT if start.tty else subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            code = 127 if isinstance(e, FileNotFoundError) else 126
            yield pb.StreamOutput(exit=pb.ExitStatus(code=code, message=e.strerror or str(e)))
            return

        def pump(stream, field):
            for chunk in iter(lambda: stream.read1(65536), b""):
                out.put(pb.StreamOutput(**{field: chunk}))
            out.put(field)  # this stream is done

        readers = [threading.Thread(target=pump, args=(proc.stdout, "stdout"), daemon=True)]
        if proc.stderr is not None:
            readers.append(threading.Thread(target=pump, args=(proc.stderr, "stderr"), daemon=True))
        for t in readers:
            t.start()

        def feed():
            try:
                for msg in request_iterator:
                    if msg.WhichOneof("request") != "input" or proc.stdin is None:
                        continue
                    kind = msg.input.WhichOneof("input")
                    if kind == "stdin":
                        proc.stdin.write(msg.input.stdin)
                        proc.stdin.flush()
                    elif kind == "stdin_closed":
                        break
            except Exception:
                pass
            finally:
                # Half-close = stdin_closed.
                if proc.stdin is not None:
                    try:
                        proc.stdin.close()
                    except OSError:
                        pass

        threading.Thread(target=feed, daemon=True).start()
        context.add_callback(lambda: kill_group(proc.pid))
        done = 0
        while done < len(readers):
            item = out.get()
            if isinstance(item, str):
                done += 1
            else:
                yield item
        code = proc.wait()
        yield pb.StreamOutput(exit=pb.ExitStatus(code=code if code >= 0 else 128 - code))

    def UpdatePod(self, request, context):
        context.abort(
            self.grpc.StatusCode.UNIMPLEMENTED,
            "UpdatePod is not offered by the python example provider: local processes cannot change in place",
        )

    def Attach(self, request_iterator, context):
        context.abort(
            self.grpc.StatusCode.UNIMPLEMENTED,
            "Attach is not offered by the python example provider: containers have no attachable terminal",
        )

    def PortForward(self, request_iterator, context):
        context.abort(
            self.grpc.StatusCode.UNIMPLEMENTED,
            "PortForward is not offered by the python example provider: pods share the host network",
        )

    def GetStats(self, request, context):
        context.abort(
            self.grpc.StatusCode.UNIMPLEMENTED,
            "GetStats is not offered by the python example provider",
        )


def read_pid(container_dir):
    try:
        with open(os.path.join(container_dir, "pid")) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def group_alive(pgid):
    """Whether the supervisor (leader of the group) still runs; a zombie waiting for whoever
    inherited it to reap it counts as ended."""
    try:
        with open(f"/proc/{pgid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


if __name__ == "__main__":
    main()
