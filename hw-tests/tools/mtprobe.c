/*
 * mtprobe: look at a SCSI tape (Linux st) from outside pbio.
 *
 *   mtprobe status DEV     MTIOCGET and MTIOCPOS, one "key=value" per line:
 *                          file, block, blkno_pos, blksize, density, gstat
 *                          (hex), and the flags BOT EOF EOT EOD SM WR_PROT
 *                          ONLINE DR_OPEN as 0/1.
 *   mtprobe walk DEV [MAX [COUNT]]
 *                          From the current position, read tape blocks with
 *                          MAX-byte reads (default 1 MiB; st answers EINVAL
 *                          to much larger reads) and print one line
 *                          per block: "block FILE INDEX SIZE HEAD" (HEAD =
 *                          the block's first 4 bytes in hex), "filemark FILE"
 *                          after each filemark, and "end REASON" when two
 *                          filemarks follow each other, the drive reports
 *                          end of data, or a read fails (REASON = eod,
 *                          double-filemark, count, or the errno text); at
 *                          most COUNT blocks and filemarks when given. A
 *                          0-byte read with GMT_EOD set is the end of data
 *                          (st returns one before EIO), not a filemark.
 *                          Variable-block mode (MTSETBLK 0) is set first.
 *
 *   mtprobe roundtrip DEV BLOCK COUNT [WOFF [READ [ROFF]]]
 *                          Rewind, write COUNT blocks of BLOCK bytes from a
 *                          buffer WOFF bytes past a page boundary, a filemark,
 *                          rewind, read them back with READ-byte reads (default
 *                          BLOCK) into a buffer ROFF bytes past a page boundary,
 *                          and compare. Every 8-byte word written holds its
 *                          block and byte offset, so a wrong word says where its
 *                          bytes came from. One line a block: "ok B N" or
 *                          "bad B N first=OFF words=K got=BLOCK:OFF" (the word
 *                          found at the first difference, decoded). Exit 1 when
 *                          a block is bad. It overwrites the cartridge.
 *
 * It uses the kernel's own <sys/mtio.h>, not pbio's definitions, so a wrong
 * struct layout or request code in pbio cannot hide in both. Build:
 *   cc -O2 -static -o mtprobe hw-tests/tools/mtprobe.c
 * (hw-tests/vm/run.sh does this for the guest; on a lab machine with the
 * mt-st package, `mt -f DEV status` shows the same status fields.)
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mtio.h>
#include <unistd.h>

static int open_tape(const char *dev, int flags)
{
	int fd = open(dev, flags);
	if (fd < 0) {
		fprintf(stderr, "mtprobe: open %s: %s\n", dev, strerror(errno));
		exit(2);
	}
	return fd;
}

static int status(const char *dev)
{
	struct mtget get;
	struct mtpos pos;
	int fd = open_tape(dev, O_RDONLY);

	if (ioctl(fd, MTIOCGET, &get) < 0) {
		fprintf(stderr, "mtprobe: MTIOCGET %s: %s\n", dev, strerror(errno));
		return 1;
	}
	printf("file=%d\n", get.mt_fileno);
	printf("block=%d\n", get.mt_blkno);
	if (ioctl(fd, MTIOCPOS, &pos) == 0)
		printf("blkno_pos=%ld\n", (long)pos.mt_blkno);
	else
		printf("blkno_pos=error:%s\n", strerror(errno));
	printf("blksize=%ld\n", (long)((get.mt_dsreg & MT_ST_BLKSIZE_MASK) >> MT_ST_BLKSIZE_SHIFT));
	printf("density=%ld\n", (long)((get.mt_dsreg & MT_ST_DENSITY_MASK) >> MT_ST_DENSITY_SHIFT));
	printf("gstat=0x%08lx\n", (unsigned long)get.mt_gstat);
	printf("BOT=%d\n", GMT_BOT(get.mt_gstat) ? 1 : 0);
	printf("EOF=%d\n", GMT_EOF(get.mt_gstat) ? 1 : 0);
	printf("EOT=%d\n", GMT_EOT(get.mt_gstat) ? 1 : 0);
	printf("EOD=%d\n", GMT_EOD(get.mt_gstat) ? 1 : 0);
	printf("SM=%d\n", GMT_SM(get.mt_gstat) ? 1 : 0);
	printf("WR_PROT=%d\n", GMT_WR_PROT(get.mt_gstat) ? 1 : 0);
	printf("ONLINE=%d\n", GMT_ONLINE(get.mt_gstat) ? 1 : 0);
	printf("DR_OPEN=%d\n", GMT_DR_OPEN(get.mt_gstat) ? 1 : 0);
	close(fd);
	return 0;
}

static int walk(const char *dev, size_t max, long count)
{
	struct mtop setblk = { .mt_op = MTSETBLK, .mt_count = 0 };
	struct mtget get;
	int fd = open_tape(dev, O_RDONLY);
	unsigned char *buf = malloc(max);
	long file = 0, index = 0;
	int marks_in_a_row = 0;
	long objects = 0;

	if (!buf) {
		fprintf(stderr, "mtprobe: no memory for a %zu-byte block\n", max);
		return 2;
	}
	if (ioctl(fd, MTIOCTOP, &setblk) < 0) {
		fprintf(stderr, "mtprobe: MTSETBLK 0 %s: %s\n", dev, strerror(errno));
		return 1;
	}
	if (ioctl(fd, MTIOCGET, &get) == 0)
		file = get.mt_fileno;
	for (;;) {
		ssize_t n;
		if (count > 0 && objects == count) {
			printf("end count\n");
			break;
		}
		objects++;
		n = read(fd, buf, max);
		if (n < 0) {
			int err = errno;
			/* st reports "no more data" at end of data as EIO with EOD set. */
			if (ioctl(fd, MTIOCGET, &get) == 0 && GMT_EOD(get.mt_gstat)) {
				printf("end eod\n");
				break;
			}
			printf("end %s\n", strerror(err));
			free(buf);
			close(fd);
			return 1;
		}
		if (n == 0) {
			/*
			 * st returns one 0-byte read at the end of recorded
			 * data too (then EIO); MTIOCGET tells it from a
			 * filemark by GMT_EOD.
			 */
			if (ioctl(fd, MTIOCGET, &get) == 0 && GMT_EOD(get.mt_gstat)) {
				printf("end eod\n");
				break;
			}
			printf("filemark %ld\n", file);
			file++;
			index = 0;
			if (++marks_in_a_row == 2) {
				printf("end double-filemark\n");
				break;
			}
			continue;
		}
		marks_in_a_row = 0;
		printf("block %ld %ld %zd %02x%02x%02x%02x\n", file, index, n,
		       n > 0 ? buf[0] : 0, n > 1 ? buf[1] : 0, n > 2 ? buf[2] : 0, n > 3 ? buf[3] : 0);
		index++;
	}
	free(buf);
	close(fd);
	return 0;
}

static unsigned long long word_of(long block, size_t off)
{
	return 0x5042000000000000ull | ((unsigned long long)block << 32) | (unsigned long long)off;
}

static unsigned char *page_buffer(size_t bytes, size_t off)
{
	void *p = NULL;
	if (posix_memalign(&p, 4096, bytes + off + 4096) != 0) {
		fprintf(stderr, "mtprobe: no memory for a %zu-byte buffer\n", bytes);
		exit(2);
	}
	return (unsigned char *)p + off;
}

static int roundtrip(const char *dev, size_t block, long count, size_t woff, size_t rbytes, size_t roff)
{
	struct mtop setblk = { .mt_op = MTSETBLK, .mt_count = 0 };
	struct mtop rew = { .mt_op = MTREW, .mt_count = 1 };
	struct mtop weof = { .mt_op = MTWEOF, .mt_count = 1 };
	int fd = open_tape(dev, O_RDWR);
	unsigned char *w = page_buffer(block, woff);
	unsigned char *r = page_buffer(rbytes, roff);
	int bad = 0;
	long b;

	if (block % 8 != 0) {
		fprintf(stderr, "mtprobe: BLOCK must be a multiple of 8\n");
		return 2;
	}
	if (ioctl(fd, MTIOCTOP, &setblk) < 0 || ioctl(fd, MTIOCTOP, &rew) < 0) {
		fprintf(stderr, "mtprobe: MTSETBLK 0 / MTREW %s: %s\n", dev, strerror(errno));
		return 1;
	}
	for (b = 0; b < count; b++) {
		ssize_t n;
		for (size_t i = 0; i < block; i += 8) {
			unsigned long long v = word_of(b, i);
			memcpy(w + i, &v, 8);
		}
		n = write(fd, w, block);
		if (n != (ssize_t)block) {
			fprintf(stderr, "mtprobe: write block %ld of %zu bytes: %zd (%s)\n", b, block, n,
				n < 0 ? strerror(errno) : "short");
			return 1;
		}
	}
	if (ioctl(fd, MTIOCTOP, &weof) < 0 || ioctl(fd, MTIOCTOP, &rew) < 0) {
		fprintf(stderr, "mtprobe: MTWEOF / MTREW %s: %s\n", dev, strerror(errno));
		return 1;
	}
	for (b = 0; b < count; b++) {
		ssize_t n;
		size_t first = (size_t)-1, words = 0;
		memset(r, 0xee, rbytes);
		n = read(fd, r, rbytes);
		if (n < 0) {
			printf("bad %ld read: %s\n", b, strerror(errno));
			bad = 1;
			break;
		}
		for (size_t i = 0; i + 8 <= (size_t)n; i += 8) {
			unsigned long long v = word_of(b, i), got;
			memcpy(&got, r + i, 8);
			if (got != v) {
				if (first == (size_t)-1)
					first = i;
				words++;
			}
		}
		if ((size_t)n != block || words) {
			unsigned long long got = 0;
			if (first != (size_t)-1)
				memcpy(&got, r + first, 8);
			printf("bad %ld %zd first=%zd words=%zu got=%s%lld:%lld\n", b, n,
			       first == (size_t)-1 ? (ssize_t)-1 : (ssize_t)first, words,
			       (got >> 48) == 0x5042 ? "" : "raw ",
			       (got >> 48) == 0x5042 ? (long long)((got >> 32) & 0xffff) : (long long)got,
			       (got >> 48) == 0x5042 ? (long long)(got & 0xffffffff) : 0);
			bad = 1;
		} else {
			printf("ok %ld %zd\n", b, n);
		}
	}
	close(fd);
	return bad;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && strcmp(argv[1], "status") == 0)
		return status(argv[2]);
	if (argc >= 3 && strcmp(argv[1], "walk") == 0)
		return walk(argv[2], argc >= 4 ? strtoul(argv[3], NULL, 0) : (1u << 20),
			    argc >= 5 ? strtol(argv[4], NULL, 0) : 0);
	if (argc >= 5 && strcmp(argv[1], "roundtrip") == 0) {
		size_t block = strtoul(argv[3], NULL, 0);
		return roundtrip(argv[2], block, strtol(argv[4], NULL, 0),
				 argc >= 6 ? strtoul(argv[5], NULL, 0) : 0,
				 argc >= 7 ? strtoul(argv[6], NULL, 0) : block,
				 argc >= 8 ? strtoul(argv[7], NULL, 0) : 0);
	}
	fprintf(stderr, "usage: mtprobe status DEV | mtprobe walk DEV [MAX_BLOCK_BYTES [COUNT]]\n"
		"       | mtprobe roundtrip DEV BLOCK COUNT [WOFF [READ [ROFF]]]\n");
	return 2;
}
