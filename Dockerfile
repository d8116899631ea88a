# One image runs every aerogate process; docker-compose.yml picks the command.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/aerogate ./cmd/aerogate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/aerogate /usr/local/bin/aerogate
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/aerogate"]
CMD ["gateway"]
