# One image runs every aerogate process; docker-compose.yml picks the command.
#   docker build --build-arg VERSION=$(git describe --tags --always) --build-arg REVISION=$(git rev-parse HEAD) .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=""
ARG REVISION=""
# Static (no cgo), so the runtime image needs no libc; .git is not in the build context,
# so the version and revision come from the build arguments.
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags="-s -w -X github.com/aerostic/aerogate/internal/role.version=${VERSION} -X github.com/aerostic/aerogate/internal/role.revision=${REVISION}" \
      -o /out/aerogate ./cmd/aerogate

# distroless static: the binary, CA certificates and time zones; no shell, no package
# manager. nonroot is uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/aerogate /usr/local/bin/aerogate
USER nonroot:nonroot
EXPOSE 8080 8081 8082
ENTRYPOINT ["/usr/local/bin/aerogate"]
CMD ["gateway"]
