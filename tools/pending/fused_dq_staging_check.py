"""Check of fused-dQ v2's staging (tools/pending/sm90-fused-dq.patch, reduce_add_dq): for every row shift 0..64,
each float pair of the two 64 x 32 swizzled boxes is written exactly once, with fragment row q = row + shift
where that is < 64 and zeros below; the 128-byte swizzle (16-byte chunk c of row q at c ^ (q % 8)) undone.

    python3 tools/pending/fused_dq_staging_check.py
"""
for shift in range(0, 65):
    cells = {}
    for warp in range(4):
        for lane in range(32):
            for t in range(8):
                for r in range(2):
                    q = warp*16 + r*8 + lane//4
                    col = 8*(t % 4) + 2*(lane % 4)
                    box = t//4
                    val = ('v', q, 8*t + 2*(lane % 4))  # fragment row q, dq column within the warpgroup's 64
                    def put(row, v):
                        addr = (box, row*32 + (((col//4) ^ (row % 8))*4) + col % 4)
                        assert addr not in cells, (shift, addr)
                        cells[addr] = v
                    if shift == 0:
                        put(q, val)
                    else:
                        qs = q - shift
                        if qs >= 0: put(qs, val)
                        if q >= 64 - shift: put(q, ('z',))
    assert len(cells) == 2*64*16, (shift, len(cells))  # float2 cells: 2 boxes x 64 rows x 16 pairs
    for (box, a), v in cells.items():
        row = a // 32; within = a % 32; chunk = within // 4; c = chunk ^ (row % 8); col = c*4 + within % 4
        gcol = box*32 + col
        if row + shift < 64:
            assert v == ('v', row + shift, gcol), (shift, row, gcol, v)
        else:
            assert v == ('z',), (shift, row, v)
print("staging ok for shifts 0..64")
