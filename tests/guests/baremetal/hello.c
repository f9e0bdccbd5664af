/* A bare-metal guest built by a real toolchain (aarch64-linux-gnu-gcc): it prints through
 * Arm semihosting (SYS_WRITE0, SYS_WRITEC, SYS_WRITE on ":tt") and through the PL011 UART
 * of QEMU's virt board, checks that its .data was loaded and its .bss zeroed, and exits with
 * a status through SYS_EXIT (ADP_Stopped_ApplicationExit). */

#define SYS_OPEN 0x01
#define SYS_WRITEC 0x03
#define SYS_WRITE0 0x04
#define SYS_WRITE 0x05
#define SYS_EXIT 0x18
#define ADP_Stopped_ApplicationExit 0x20026
#define OPEN_MODE_W 4 /* fopen "w": ":tt" opens stdout */

#define PL011_DR ((volatile unsigned int *)0x09000000)
#define PL011_FR ((volatile unsigned int *)0x09000018)
#define PL011_FR_TXFF (1u << 5)

static long semihosting(long op, const void *arg)
{
    register long x0 __asm__("x0") = op;
    register const void *x1 __asm__("x1") = arg;
    __asm__ volatile("hlt #0xf000" : "+r"(x0) : "r"(x1) : "memory");
    return x0;
}

static unsigned long length(const char *s)
{
    unsigned long n = 0;
    while (s[n])
        n++;
    return n;
}

static void uart_puts(const char *s)
{
    for (; *s; s++) {
        while (*PL011_FR & PL011_FR_TXFF)
            ;
        *PL011_DR = (unsigned char)*s;
    }
}

void semihosting_exit(long status)
{
    long block[2] = {ADP_Stopped_ApplicationExit, status};
    semihosting(SYS_EXIT, block);
}

/* Loader checks: initialised data must arrive, the bss must be zero. */
static const char banner[] = "hello from semihosting\n";
int answer = 40;
unsigned char scratch[256]; /* in .bss: the loader must zero it */

int main(void)
{
    semihosting(SYS_WRITE0, banner);
    char bang = '!';
    semihosting(SYS_WRITEC, &bang);
    semihosting(SYS_WRITEC, "\n");

    const char *tt = ":tt";
    long open_block[3] = {(long)tt, OPEN_MODE_W, (long)length(tt)};
    long handle = semihosting(SYS_OPEN, open_block);
    const char *line = "written to stdout\n";
    long write_block[3] = {handle, (long)line, (long)length(line)};
    long unwritten = semihosting(SYS_WRITE, write_block);

    uart_puts("hello from the UART\n");

    int dirty = 0;
    for (unsigned i = 0; i < sizeof scratch; i++)
        dirty |= scratch[i];
    if (dirty || handle <= 0 || unwritten != 0)
        return 100 + (dirty != 0) + 2 * (handle <= 0) + 4 * (unwritten != 0);
    return answer + 2; /* 42: .data arrived */
}
