# The Synod replica image: one statically linked binary, nothing else.
# Built by docker/build.sh from a staging directory holding `synod` (no registry is needed:
# `scratch` is built into Docker). The healthcheck uses the binary itself:
# `synod health` exits 0 only when the replica's /readyz answers 200 (etcd lease, a known
# leader, reads served from its own state).
FROM scratch
COPY synod /synod
ENV SYNOD_HTTP_LISTEN=0.0.0.0:8080 \
    SYNOD_GRPC_LISTEN=0.0.0.0:9090 \
    RUST_LOG=info
EXPOSE 8080 9090
HEALTHCHECK --interval=2s --timeout=5s --start-period=5s --retries=30 \
    CMD ["/synod", "health", "--url", "http://127.0.0.1:8080/readyz", "--timeout-ms", "2000"]
ENTRYPOINT ["/synod"]
CMD ["node"]
