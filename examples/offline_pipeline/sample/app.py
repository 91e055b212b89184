"""A tiny application for the offline pipeline to count."""


def greet(name):
    return f"hello, {name}"


def main():
    print(greet("world"))


if __name__ == "__main__":
    main()
