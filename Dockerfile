# mmrec serving on the CPU: python -m mmrec.serve over a bundle mounted at /bundle.
#   docker build -t mmrec .
#   docker run -p 8000:8000 -e MMREC_API_TOKEN=... -v $PWD/bundle:/bundle mmrec
# The live store (adds and deletes) is written to /bundle/live/: mount the bundle read-write, or point
# serve.store at a volume. Several workers share it: add `workers=4` to the command.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg libsndfile1 && rm -rf /var/lib/apt/lists/*
# the CPU build of torch first, so that installing mmrec does not pull a CUDA build
RUN pip install --no-cache-dir torch==2.9.1 torchaudio==2.9.1 torchvision==0.24.1 --index-url https://download.pytorch.org/whl/cpu
WORKDIR /opt/mmrec
COPY pyproject.toml README.md LICENSE ./
COPY mmrec ./mmrec
COPY conf ./conf
RUN pip install --no-cache-dir ".[serve]"
RUN useradd --create-home mmrec
USER mmrec
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v1/ready')"
ENTRYPOINT ["python", "-m", "mmrec.serve", "bundle=/bundle", "host=0.0.0.0", "port=8000"]
