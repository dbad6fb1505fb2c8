// The machine1 image API over core::ImagePool: Manager's *Image* methods and one Image object per
// image at /org/freedesktop/machine1/image/<bus_label_escape(name)>. Image objects are created
// when a client asks for them (GetImage, ListImages) and dropped for images that are gone at the
// next listing. Mutations are root-only and refused (EBUSY) while a machine runs from the image
// (security.md R-13). Thread-hostile (machd's one loop).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <sdbus-c++/sdbus-c++.h>

#include "core/image/pool.hpp"
#include "core/machine/service.hpp"
#include "Image-adaptor.h"

namespace mk::bus {

std::string image_object_path(std::string_view name);

class ImageObject;

class ImageService {
public:
    ImageService(sdbus::IConnection& connection, core::MachineService& machines, core::ImagePool& pool)
        : connection_(connection), machines_(machines), pool_(pool) {}
    ~ImageService();

    core::ImagePool& pool() { return pool_; }

    // Validates the name, throws NoSuchImage if absent.
    core::ImageInfo get(const std::string& name, bool with_usage = false);
    // Ensures the object exists; returns its path.
    std::string object_for(const std::string& name);
    std::vector<core::ImageInfo> list();

    void remove(sdbus::IObject& obj, const std::string& name);
    void rename(sdbus::IObject& obj, const std::string& name, const std::string& new_name);
    void clone(sdbus::IObject& obj, const std::string& name, const std::string& new_name, bool read_only);
    void mark_read_only(sdbus::IObject& obj, const std::string& name, bool read_only);
    void set_limit(sdbus::IObject& obj, const std::string& name, uint64_t limit);
    void set_pool_limit(sdbus::IObject& obj, uint64_t limit);
    std::string hostname(const std::string& name);
    std::vector<uint8_t> machine_id(const std::string& name);
    std::map<std::string, std::string> machine_info(const std::string& name);
    std::map<std::string, std::string> os_release(const std::string& name);
    // Whether a registered machine runs from the image (its root directory is the image or inside it).
    bool busy(const core::ImageInfo& info);

private:
    void check_not_busy(const core::ImageInfo& info);
    core::UniqueFd open_root(const std::string& name);

    sdbus::IConnection& connection_;
    core::MachineService& machines_;
    core::ImagePool& pool_;
    std::map<std::string, std::unique_ptr<ImageObject>> objects_;
};

class ImageObject final
    : public sdbus::AdaptorInterfaces<org::freedesktop::machine1::Image_adaptor, sdbus::Properties_adaptor> {
public:
    ImageObject(sdbus::IConnection& connection, ImageService& images, std::string name);
    ~ImageObject();

private:
    core::ImageInfo info() { return images_.get(name_); }
    void Remove() override;
    void Rename(const std::string& new_name) override;
    void Clone(const std::string& new_name, const bool& read_only) override;
    void MarkReadOnly(const bool& read_only) override;
    void SetLimit(const uint64_t& limit) override;
    std::string GetHostname() override;
    std::vector<uint8_t> GetMachineID() override;
    std::map<std::string, std::string> GetMachineInfo() override;
    std::map<std::string, std::string> GetOSRelease() override;
    std::string Name() override { return info().name; }
    std::string Path() override { return info().path; }
    std::string Type() override { return std::string(core::to_string(info().type)); }
    bool ReadOnly() override { return info().read_only; }
    uint64_t CreationTimestamp() override { return info().crtime_usec; }
    uint64_t ModificationTimestamp() override { return info().mtime_usec; }
    uint64_t Usage() override { return images_.get(name_, true).usage; }
    uint64_t Limit() override { return info().limit; }
    uint64_t UsageExclusive() override { return info().usage_exclusive; }
    uint64_t LimitExclusive() override { return info().limit_exclusive; }

    ImageService& images_;
    std::string name_;
};

}  // namespace mk::bus
