# The image the DaemonSet in examples/kubernetes runs. Static binaries (the
# plugin and its hook) on a small Debian: the init container's copy needs a
# shell, and sized volumes need e2fsprogs (mkfs.ext4 for new volumes,
# resize2fs for volume update).
FROM golang:1.26 AS build
WORKDIR /src
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/ ./cmd/nri-volumes ./cmd/nri-volumes-hook

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends e2fsprogs && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/nri-volumes /out/nri-volumes-hook /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/nri-volumes"]
