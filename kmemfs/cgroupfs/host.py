"""What the daemon asks the host about processes (/proc), behind one small interface so the
filesystem layer can be tested with a fake host."""
import os
import select


class Host:
    def exists(self, pid: int) -> bool:
        return pid > 0 and os.path.exists(f"/proc/{pid}")

    def ppid(self, pid: int) -> int:
        """Parent pid from /proc/PID/stat (comm may hold spaces and parentheses)."""
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                data = f.read()
            return int(data[data.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            return 0

    def tgid(self, pid: int) -> int:
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Tgid:"):
                        return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return pid

    def pids(self) -> list:
        return [int(p) for p in os.listdir("/proc") if p.isdigit()]

    def tids(self) -> list:
        out = []
        for p in self.pids():
            try:
                out += [int(t) for t in os.listdir(f"/proc/{p}/task")]
            except OSError:
                pass
        return out

    def comm(self, pid: int) -> str:
        try:
            with open(f"/proc/{pid}/comm") as f:
                return f.read().strip()
        except OSError:
            return ""

    def creds(self, pid: int):
        """(uid, euid, suid) from the `Uid:` line of /proc/PID/status, or None."""
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Uid:"):
                        uid, euid, suid = (int(x) for x in line.split()[1:4])
                        return uid, euid, suid
        except (OSError, ValueError):
            pass
        return None

    def exited(self, pidfd: int) -> bool:
        """A pidfd polls readable once its process has exited."""
        p = select.poll()
        p.register(pidfd, select.POLLIN)
        return bool(p.poll(0))
