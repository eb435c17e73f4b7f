/* A listener written the way 3.x-era tools were (after Documentation/cgroups'
 * cgroup_event_listener): eventfd + cgroup.event_control, then block in read(2).
 * usage: event_listener <control file> [args]   -- prints one line per event. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char dir[4096], ctl[4200], line[4400];
	uint64_t n;
	int efd, cfd, ecfd;

	if (argc < 2) {
		fprintf(stderr, "usage: %s <control file> [args]\n", argv[0]);
		return 2;
	}
	snprintf(dir, sizeof(dir), "%s", argv[1]);
	snprintf(ctl, sizeof(ctl), "%s/cgroup.event_control", dirname(dir));
	cfd = open(argv[1], O_RDONLY);
	efd = eventfd(0, 0);
	ecfd = open(ctl, O_WRONLY);
	if (cfd < 0 || efd < 0 || ecfd < 0) {
		perror("open");
		return 1;
	}
	snprintf(line, sizeof(line), "%d %d %s", efd, cfd, argc > 2 ? argv[2] : "");
	if (write(ecfd, line, strlen(line)) < 0) {
		perror("cgroup.event_control");
		return 1;
	}
	printf("registered\n");
	fflush(stdout);
	for (;;) {
		if (read(efd, &n, sizeof(n)) != sizeof(n)) {
			perror("read eventfd");
			return 1;
		}
		if (access(ctl, W_OK) < 0 && errno == ENOENT) {
			printf("cgroup removed\n");
			return 0;
		}
		printf("event %s %s\n", argv[1], argc > 2 ? argv[2] : "");
		fflush(stdout);
	}
}
