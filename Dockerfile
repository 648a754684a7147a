# A first image: builds and starts a corral node. Packaging (multi-arch, slim runtime) comes later.
FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates nodejs npm qemu-system-x86 qemu-utils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/corral
COPY package.json package-lock.json ./
# Debian's Node only runs npm; the project's own Node 24 (the npm package `node`) runs corral.
RUN npm ci --omit=dev --no-audit --no-fund
COPY bin ./bin
COPY src ./src
COPY config ./config
ENV PATH=/opt/corral/node_modules/.bin:$PATH \
    CORRAL_DATA_DIR=/var/lib/corral \
    CORRAL_API_ADDR=0.0.0.0:8080
VOLUME /var/lib/corral
EXPOSE 8080
ENTRYPOINT ["node", "bin/corral.js"]
CMD ["node"]
