# veneur in an empty image: one static binary (CGO_ENABLED=0), the CA
# certificates it needs for https:// destinations, and nothing else.
#
#   docker build -t veneur --build-arg VERSION=$(git describe --always --dirty) .
#   docker run --rm -v "$PWD/veneur.yaml:/etc/veneur/veneur.yaml:ro" \
#     -p 8126:8126/udp -p 8127:8127 veneur
#
# docs/deployment.md has a Kubernetes DaemonSet. e2e/packaging_test.go
# builds the binary with the RUN line below and checks that it is static.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=unknown
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/veneur/veneur.VERSION=${VERSION}" -o /out/veneur ./cmd/veneur

FROM scratch
COPY --from=build /out/veneur /veneur
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# nobody: veneur needs no privilege (it binds ports above 1024; a unix
# socket's directory must be writable by this user).
USER 65534:65534
EXPOSE 8126/udp 8126/tcp 8127/tcp
ENTRYPOINT ["/veneur"]
CMD ["-f", "/etc/veneur/veneur.yaml"]
