"""Model of the fused-dQ v2 slot protocol (tools/pending/sm90-fused-dq.patch, backward_consumer_sm90.cuh):
two consumer warpgroups, dS^T double-buffered by step, mbarriers ds_full / ds_empty per slot waited on by
parity as the hardware does. Random interleavings of random unit / step counts; reports a deadlock, or a dQ
GEMM reading a slot that does not hold both halves of its step. Session 14: 20000 interleavings ok.

    python3 tools/pending/fused_dq_slot_model.py
"""
import random
def program(units):
    ops=[]; n=0
    for steps in units:
        pending=False
        for _ in range(steps):
            s=n&1
            if n>=2: ops.append(('wait','empty',s,((n>>1)-1)&1))
            ops.append(('store',s,n)); ops.append(('arrive','full',s))
            if pending:
                m=n-1; ops.append(('wait','full',m&1,(m>>1)&1)); ops.append(('read',m&1,m)); ops.append(('arrive','empty',m&1))
            pending=True; n+=1
        if pending:
            m=n-1; ops.append(('wait','full',m&1,(m>>1)&1)); ops.append(('read',m&1,m)); ops.append(('arrive','empty',m&1))
    return ops
def run(units, rng):
    progs=[program(units),program(units)]; pc=[0,0]
    bar={('full',0):[0,0],('full',1):[0,0],('empty',0):[0,0],('empty',1):[0,0]}  # [arrivals in phase, completed]
    slot_content={0:{},1:{}}  # slot -> {wg: step}
    while pc[0]<len(progs[0]) or pc[1]<len(progs[1]):
        ready=[]
        for w in (0,1):
            if pc[w]>=len(progs[w]): continue
            op=progs[w][pc[w]]
            if op[0]=='wait':
                b=bar[(op[1],op[2])]
                if (b[1]&1)!=op[3]: ready.append(w)   # parity P done when current phase parity != P
            else: ready.append(w)
        if not ready: return 'deadlock',pc
        w=rng.choice(ready); op=progs[w][pc[w]]; pc[w]+=1
        if op[0]=='arrive':
            b=bar[(op[1],op[2])]; b[0]+=1
            if b[0]==2: b[0]=0; b[1]+=1
        elif op[0]=='store':
            slot_content[op[1]][w]=op[2]
        elif op[0]=='read':
            c=slot_content[op[1]]
            if c.get(0)!=op[2] or c.get(1)!=op[2]: return 'bad read',(w,op,dict(c))
    return 'ok',None
rng=random.Random(1)
for trial in range(20000):
    units=[rng.randint(1,5) for _ in range(rng.randint(1,4))]
    r=run(units,rng)
    if r[0]!='ok': print(units,r); break
else: print('20000 random interleavings ok')
