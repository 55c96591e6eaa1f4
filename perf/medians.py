#!/usr/bin/env python3
"""Medians of several fovea-perf runs: python3 perf/medians.py perf/results/A.json B.json C.json"""
import json,sys,statistics as st
files=sys.argv[1:]
runs=[json.load(open(f)) for f in files]
names=[r['scenario']['name'] for r in runs[0]['results']]
def get(r,k):
    f=r['flood']
    if k in ('node_cpu_us_per_delivery','node_cpu_us_per_call','node_rss_kib_peak','node_kib_per_peer_after_hold','calls_per_s'):
        return r.get(k)
    return f.get(k)
keys=['deliveries_per_s','calls_per_s','p50_us','p99_us','p999_us','lost','node_cpu_us_per_delivery','node_cpu_us_per_call','node_kib_per_peer_after_hold','node_rss_kib_peak','call_errors_total','connect_p50_us','handshakes_per_s','connected']
for n in names:
    row={}
    for k in keys:
        vals=[]
        for run in runs:
            for r in run['results']:
                if r['scenario']['name']==n:
                    v=get(r,k)
                    if isinstance(v,(int,float)): vals.append(v)
        if vals: row[k]=(st.median(vals), vals)
    print(n)
    for k,(m,v) in row.items(): print(f"   {k}: median {m:.4g}  runs {[round(x,3) for x in v]}")
