"""Static look at the Hopper KV kernel's consumer step in `cuobjdump -sass` output, without a GPU: the basic
block that issues S^T (the first HGMMA 64x64 that starts from zero) and the loop around it, with their
instruction counts and the R2UR / spill / HGMMA counts that matter. Session 16's ncu found the KV kernel's time
proportional to its instructions executed (fused dQ v4: 1.61x the time, 1.60x the instructions), so these
counts compare variants before device time is spent.

    cuobjdump -sass x.o > x.sass; python3 tools/sass_step.py x.sass [Lb1E | Lb0E]

The second argument picks the kernel by a substring of its mangled name (Lb1E: fused dQ, Lb0E: ordered).
The S^T block of session 16: ordered 158 instructions (R2UR 6), fused v4 218 (R2UR 48).
"""
import re, sys, collections
path = sys.argv[1]; want = sys.argv[2] if len(sys.argv) > 2 else "Lb1E"
funcs = {}; cur = None
for line in open(path):
    m = re.search(r'Function : (\S+)', line)
    if m: cur = m.group(1); funcs[cur] = []; continue
    m = re.match(r'\s+/\*([0-9a-f]{4,5})\*/\s+(.*?);', line)
    if m and cur: funcs[cur].append((int(m.group(1), 16), m.group(2).strip()))
name = [f for f in funcs if "backward_kv_kernel" in f and want in f][0]
ins = funcs[name]
def op(s): return (s.split()[1] if s.startswith('@') else s.split()[0])
def target(s):  # a branch's target address, or None
    m = re.search(r'0x([0-9a-f]+)', s) if op(s).startswith('BRA') else None
    return int(m.group(1), 16) if m else None
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
