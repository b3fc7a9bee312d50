"""Static look at the Hopper KV kernel's consumer step in `cuobjdump -sass` output, without a GPU: the basic
block that issues S^T (the first HGMMA 64x64 that starts from zero) and the loop around it, with their
instruction counts and the R2UR / spill / HGMMA counts that matter. Session 16's ncu found the KV kernel's time
proportional to its instructions executed (fused dQ v4: 1.61x the time, 1.60x the instructions), so these
counts compare variants before device time is spent.

    cuobjdump -sass x.o > x.sass; python3 tools/sass_step.py x.sass [Lb1E | Lb0E]

The second argument picks the kernel by a substring of its mangled name (Lb1E: fused dQ, Lb0E: ordered).
The S^T block of session 16: ordered 158 instructions (R2UR 6), fused v4 218 (R2UR 48).

    python3 tools/sass_step.py x.sass --loops NAME_SUBSTRING

Any kernel (e.g. backward_dq_kernel, forward_kernel): every innermost loop that issues HGMMA, with its
instruction count and the opcodes that tell a lean step from a padded one (session 17: the dQ kernel's stage
loop 916, the forward's 796 at bf16 D = 128).
"""
import re, sys, collections
path = sys.argv[1]; want = sys.argv[2] if len(sys.argv) > 2 else "Lb1E"
loops_of = sys.argv[3] if want == "--loops" else None
funcs = {}; cur = None
for line in open(path):
    m = re.search(r'Function : (\S+)', line)
    if m: cur = m.group(1); funcs[cur] = []; continue
    m = re.match(r'\s+/\*([0-9a-f]{4,5})\*/\s+(.*?);', line)
    if m and cur: funcs[cur].append((int(m.group(1), 16), m.group(2).strip()))
def op(s): return (s.split()[1] if s.startswith('@') else s.split()[0])
def target(s):  # a branch's target address, or None
    m = re.search(r'0x([0-9a-f]+)', s) if op(s).startswith('BRA') else None
    return int(m.group(1), 16) if m else None
if loops_of is not None:
    for name in (f for f in funcs if loops_of in f):
        ins = funcs[name]
        print(f"{name[:90]}: {len(ins)} instructions")
        # back-edges, without those of the out-of-line retry blocks ptxas puts after the last EXIT (an
        # mbarrier wait's spin loop jumps there and back: a "loop" over half the kernel)
        last_exit = max(a for a, s in ins if op(s) == 'EXIT')
        spans = sorted({(target(s), a) for a, s in ins if target(s) is not None and target(s) < a <= last_exit})
        # innermost: no other HGMMA loop nested inside
        def body(t, a): return [(x, s) for x, s in ins if t <= x <= a]
        hg = [(t, a) for t, a in spans if any('HGMMA' in s for _, s in body(t, a))]
        for t, a in hg:
            if any((t2, a2) != (t, a) and t <= t2 and a2 <= a for t2, a2 in hg):
                continue
            h = collections.Counter(op(s).split('.')[0] for _, s in body(t, a))
            print(f"  loop {t:#x}..{a:#x}: {a // 16 - t // 16 + 1} instructions; HGMMA {h['HGMMA']} R2UR {h['R2UR']} "
                  f"PRMT {h['PRMT']} F2FP {h['F2FP']} IMAD {h['IMAD']} MUFU {h['MUFU']} LDL {h['LDL']} STL {h['STL']}")
    sys.exit(0)
name = [f for f in funcs if "backward_kv_kernel" in f and want in f][0]
ins = funcs[name]
targets = {target(s) for a, s in ins} - {None}
# blocks: split at targets and after branches
blocks = []; curb = []
for a, s in ins:
    if a in targets and curb: blocks.append(curb); curb = []
    curb.append((a, s))
    if op(s).startswith(('BRA', 'EXIT', 'RET')): blocks.append(curb); curb = []
if curb: blocks.append(curb)
b = next(b for b in blocks if any('HGMMA.64x64x16' in s and ', RZ' in s and 'tnsp' not in s for a, s in b))
h = collections.Counter(op(s).split('.')[0] for a, s in b)
print(f"{name[:60]}: {len(ins)} instructions")
print(f"S^T block at {b[0][0]:#x}: {len(b)} instructions; R2UR {h['R2UR']} LDL {h['LDL']} UIADD3 {h['UIADD3']} VIADD {h['VIADD']} IMAD {h['IMAD']}")
# the loop: the first branch after the S^T block back to an address at or before its start
start = b[0][0]
back = next(((a, target(s)) for a, s in ins if a > start and target(s) is not None and target(s) <= start), None)
if back:
    end, head = back
    body = [(a, s) for a, s in ins if head <= a <= end]
    hb = collections.Counter(op(s).split('.')[0] for a, s in body)
    print(f"loop {head:#x}..{end:#x}: {len(body)} instructions; R2UR {hb['R2UR']} LDL {hb['LDL']} STL {hb['STL']} HGMMA {hb['HGMMA']} BAR {hb['BAR']} SYNCS {hb['SYNCS']}")
