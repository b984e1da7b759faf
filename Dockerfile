# The image the DaemonSet in examples/kubernetes runs. A static binary on an
# empty base: the plugin needs no shell, but the init container's copy does,
# so the base is busybox.
FROM golang:1.26 AS build
WORKDIR /src
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/nri-volumes ./cmd/nri-volumes

FROM busybox:stable
COPY --from=build /out/nri-volumes /usr/local/bin/nri-volumes
ENTRYPOINT ["/usr/local/bin/nri-volumes"]
