# etcd for the Synod cluster: Debian's /usr/bin/etcd plus the two libraries it links
# (libc and the dynamic loader), copied at their paths, and `probe`, a static std-only HTTP
# probe from chaos/probe (the image has no shell or etcdctl) for the healthcheck.
FROM scratch
COPY etcd /usr/bin/etcd
COPY libc.so.6 /lib/x86_64-linux-gnu/libc.so.6
COPY ld-linux-x86-64.so.2 /lib64/ld-linux-x86-64.so.2
COPY synod-probe /probe
EXPOSE 2379 2380
HEALTHCHECK --interval=2s --timeout=3s --start-period=3s --retries=30 \
    CMD ["/probe", "http://127.0.0.1:2379/health", "\"health\":\"true\""]
ENTRYPOINT ["/usr/bin/etcd"]
