# Host model of src/cuda/sm90/dq_accum_tiles_sm90.h (fused-dQ patch): each KV-kernel step maps to one accumulator tile of
# its sequence, and the post-process writes every query row exactly once. python3 tools/pending/dq_tile_model.py
# host model of dq_accum_tiles_sm90.h: the KV kernel's tile choice and the post-process's inverse
import random
def frow(tid,e): return tid//32*16 + (e//2%2)*8 + tid%32//4
def fcol(tid,e): return e//4*8 + 2*(tid%4) + e%2
def base(qb,b): return qb//64 + 2*b
def first(off): return max(off,0)//64
def seq_of(tile, qbs):
    lo,hi=0,len(qbs)-1
    while lo<hi:
        mid=(lo+hi+1)//2
        if base(qbs[mid],mid)<=tile: lo=mid
        else: hi=mid-1
    return lo
# fragment bijection
seen=set()
for tid in range(128):
    for e in range(32):
        seen.add((frow(tid,e),fcol(tid,e)))
assert len(seen)==4096
for trial in range(3000):
    B=random.randint(1,5)
    lq=[random.choice([1,2,63,64,65,127,128,200,300,random.randint(1,700)]) for _ in range(B)]
    offs=[random.choice([0,1,63,64,100,-5,-70,random.randint(-200,400)]) for _ in range(B)]
    qbs=[sum(lq[:b]) for b in range(B)]; total=sum(lq)
    ntiles=total//64+2*B
    owner={}
    for b in range(B):
        off=offs[b]
        # every 64-aligned step with a query of the sequence (positions >= 0)
        for p0 in range(0, off+lq[b]+64, 64):
            if not (p0+64>off and p0<off+lq[b]): continue
            t=base(qbs[b],b)+p0//64-first(off)
            assert 0<=t<ntiles,(t,ntiles)
            assert t not in owner or owner[t]==(b,p0), "overlap"
            owner[t]=(b,p0)
    # post-process: every row of every sequence with pos>=0 comes from exactly one tile
    got={}
    for t in range(ntiles):
        b=seq_of(t,qbs); off=offs[b]
        pos0=(t-base(qbs[b],b)+first(off))*64
        lo=max(off-pos0,0); hi=min(off+lq[b]-pos0,64)
        for r in range(lo,hi):
            key=(b,pos0+r-off)
            assert key not in got; got[key]=t
            assert owner.get(t)==(b,pos0), (t, owner.get(t), b, pos0)
    want={(b,i) for b in range(B) for i in range(lq[b]) if offs[b]+i>=0}
    assert set(got)==want, (set(got)^want)
print("ok")
